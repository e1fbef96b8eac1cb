"""The journal's on-disk record format, as pure functions (no files, no clock).

A segment file is an 8-byte header followed by records::

    header:  b"TRTJ" | u16 version (1) | u16 reserved (0)
    record:  u32 length | u32 CRC-32C(body) | body          (little-endian; length = len(body))
    body:    u8 kind | kind-specific fields

Kinds:

========== ==== ======================================================================
APPEND     1    u64 seq | the upstream event frame, JSON bytes exactly as sent on the wire
ACK        2    u64 ack_seq: every seq <= ack_seq is stored by the server
CURSOR     3    JSON ``{"channel": str, "offset": int | null, "epoch": str | null}``
CHECKPOINT 4    u64 last_seq | u64 ack_seq | JSON ``{channel: [offset, epoch]}``
SEAL       5    u32 CRC-32C of the segment's bytes before this record | u64 their length
WITHDRAW   6    u64 first | u64 last | u8 reason: the appends first..last are withdrawn
========== ==== ======================================================================

Every segment starts with a CHECKPOINT, so the state it summarises (the last seq ever assigned, the
ack watermark and the cursors) survives the deletion of older segments. A segment that rolled over
ends with a SEAL: opening the journal checks a sealed segment with one CRC over the whole file and
reads its records only when they are needed.

A WITHDRAW record says that events already appended will not be sent (they expired, were dropped
or discarded): the outbox sends a ``skip`` frame for each such seq instead of its event, unless
the server has it already. Withdrawals still pending (above the ack watermark) are written again
after the CHECKPOINT of every new segment, so the newest segment alone holds them all, and a lazy
recovery that leaves sealed segments unread misses none.

Ack logs. Other local logs built on these segments (the durable queue's ``acks.log``) record which
seqs of which stream (a queue producer) a consumer acknowledged. They reuse the CURSOR record, so an
ack log is an ordinary segment file; :func:`encode_ack_record` and :func:`ack_log_records` name
the three uses:

======================== ======================================================
:class:`StreamAck`       ``{"channel": stream, "offset": seq, "epoch": null}``
:class:`StreamWatermark` ``{"channel": stream, "offset": seq, "epoch": "w"}``
:class:`StreamForgotten` ``{"channel": stream, "offset": null, "epoch": null}``
======================== ======================================================

(Reading, a CURSOR record with a null offset is a :class:`StreamForgotten` whatever its epoch, and
one with an epoch other than ``"w"`` a :class:`StreamAck`, as they always were.)
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from typing import NamedTuple

import attrs
import orjson
from crc32c import crc32c

__all__ = [
    "HEADER",
    "MAX_RECORD_BYTES",
    "SEAL_RECORD_BYTES",
    "WATERMARK_EPOCH",
    "AckLogRecord",
    "AckMark",
    "Append",
    "Checkpoint",
    "CursorMark",
    "Damage",
    "Kind",
    "Record",
    "ScanResult",
    "Seal",
    "StreamAck",
    "StreamForgotten",
    "StreamWatermark",
    "Withdraw",
    "ack_log_records",
    "decode_body",
    "encode_ack_log",
    "encode_ack_record",
    "encode_append",
    "encode_record",
    "encode_records",
    "scan",
    "seal_length",
    "sealed_frames",
]

HEADER = b"TRTJ\x01\x00\x00\x00"
#: Largest body a record may have; a length field above it is damage, not a record.
MAX_RECORD_BYTES = 64 * 1024 * 1024

_PREFIX = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_KIND_U64 = struct.Struct("<BQ")
_KIND_U64_U64 = struct.Struct("<BQQ")
_SEAL = struct.Struct("<BIQ")
_WITHDRAW = struct.Struct("<BQQB")


class Kind(enum.IntEnum):
    """The first byte of a record body."""

    APPEND = 1
    ACK = 2
    CURSOR = 3
    CHECKPOINT = 4
    SEAL = 5
    WITHDRAW = 6


_APPEND = int(Kind.APPEND)


class Append(NamedTuple):
    """An upstream event: its seq and the exact frame bytes sent on the wire.

    A named tuple rather than an attrs class: recovery builds one per pending event, a million
    after a long time offline, and a tuple is several times cheaper to make."""

    seq: int
    data: bytes


@attrs.frozen
class AckMark:
    """The server stored every seq up to ``ack_seq``."""

    ack_seq: int


@attrs.frozen
class CursorMark:
    """The last downstream offset processed on a channel (``offset is None``: cursor removed)."""

    channel: str
    offset: int | None
    epoch: str | None


@attrs.frozen
class Checkpoint:
    """The journal state at the start of a segment."""

    last_seq: int
    ack_seq: int
    cursors: dict[str, tuple[int, str | None]] = attrs.field(factory=dict)


@attrs.frozen
class Seal:
    """The last record of a segment that rolled over: the CRC-32C and length of every byte before
    it."""

    crc: int
    length: int


@attrs.frozen
class Withdraw:
    """The appends ``first..last`` (inclusive) are withdrawn for ``reason`` (an outbox code)."""

    first: int
    last: int
    reason: int


Record = Append | AckMark | CursorMark | Checkpoint | Seal | Withdraw

#: The framed size of a :class:`Seal` record (it is always the last record of a sealed segment).
SEAL_RECORD_BYTES = _PREFIX.size + _SEAL.size


def _body(record: Record) -> bytes:
    if isinstance(record, Append):
        return _KIND_U64.pack(Kind.APPEND, record.seq) + record.data
    if isinstance(record, AckMark):
        return _KIND_U64.pack(Kind.ACK, record.ack_seq)
    if isinstance(record, CursorMark):
        fields = {"channel": record.channel, "offset": record.offset, "epoch": record.epoch}
        return bytes([Kind.CURSOR]) + orjson.dumps(fields)
    if isinstance(record, Seal):
        return _SEAL.pack(Kind.SEAL, record.crc, record.length)
    if isinstance(record, Withdraw):
        return _WITHDRAW.pack(Kind.WITHDRAW, record.first, record.last, record.reason)
    cursors = {name: [offset, epoch] for name, (offset, epoch) in record.cursors.items()}
    head = _KIND_U64_U64.pack(Kind.CHECKPOINT, record.last_seq, record.ack_seq)
    return head + orjson.dumps(cursors)


def encode_record(record: Record) -> bytes:
    """The framed bytes of one record: length, CRC-32C of the body, body."""
    body = _body(record)
    return _PREFIX.pack(len(body), crc32c(body)) + body


def encode_append(seq: int, data: bytes) -> bytes:
    """The framed bytes of an :class:`Append` record (the hot path: no intermediate object)."""
    head = _KIND_U64.pack(_APPEND, seq)
    crc = crc32c(data, crc32c(head))  # the body's CRC without building the body first
    return b"".join((_PREFIX.pack(len(head) + len(data), crc), head, data))


def encode_records(records: Iterable[Record]) -> bytes:
    return b"".join(encode_record(record) for record in records)


# --- ack logs ------------------------------------------------------------------------------------

#: The epoch of a CURSOR record that stands for a :class:`StreamWatermark` in an ack log.
WATERMARK_EPOCH = "w"


@attrs.frozen
class StreamAck:
    """Ack log: seq ``seq`` of ``stream`` is acknowledged (acks may come in any order)."""

    stream: str
    seq: int


@attrs.frozen
class StreamWatermark:
    """Ack log: every seq of ``stream`` up to ``seq`` is acknowledged."""

    stream: str
    seq: int


@attrs.frozen
class StreamForgotten:
    """Ack log: ``stream`` is gone; forget every ack recorded for it."""

    stream: str


AckLogRecord = StreamAck | StreamWatermark | StreamForgotten


def encode_ack_record(record: AckLogRecord) -> bytes:
    """The framed bytes of one ack-log record (a CURSOR record: see the module docstring)."""
    if isinstance(record, StreamAck):
        mark = CursorMark(record.stream, record.seq, None)
    elif isinstance(record, StreamWatermark):
        mark = CursorMark(record.stream, record.seq, WATERMARK_EPOCH)
    else:
        mark = CursorMark(record.stream, None, None)
    return encode_record(mark)


def encode_ack_log(records: Iterable[AckLogRecord]) -> bytes:
    """A whole ack-log file: the segment header, then ``records``."""
    return HEADER + b"".join(encode_ack_record(record) for record in records)


def ack_log_records(records: Iterable[Record]) -> list[AckLogRecord]:
    """The ack-log records among decoded segment records (others are skipped)."""
    found: list[AckLogRecord] = []
    for record in records:
        if not isinstance(record, CursorMark):
            continue
        if record.offset is None:
            found.append(StreamForgotten(record.channel))
        elif record.epoch == WATERMARK_EPOCH:
            found.append(StreamWatermark(record.channel, record.offset))
        else:
            found.append(StreamAck(record.channel, record.offset))
    return found


def decode_body(body: bytes | memoryview) -> Record:
    """Decode a record body whose CRC already matched.

    Raises:
        ValueError: the body is of an unknown kind or malformed.
    """
    if not body:
        raise ValueError("empty record body")
    kind = body[0]
    try:
        if kind == Kind.APPEND:
            (seq,) = _U64.unpack_from(body, 1)
            return Append(seq, bytes(body[9:]))
        if kind == Kind.ACK and len(body) == 9:
            return AckMark(_U64.unpack_from(body, 1)[0])
        if kind == Kind.CURSOR:
            fields = orjson.loads(body[1:])
            return CursorMark(fields["channel"], fields["offset"], fields["epoch"])
        if kind == Kind.CHECKPOINT:
            _, last_seq, ack_seq = _KIND_U64_U64.unpack_from(body, 0)
            raw = orjson.loads(body[_KIND_U64_U64.size :])
            cursors = {name: (value[0], value[1]) for name, value in raw.items()}
            return Checkpoint(last_seq, ack_seq, cursors)
        if kind == Kind.WITHDRAW and len(body) == _WITHDRAW.size:
            _, first, last, reason = _WITHDRAW.unpack_from(body, 0)
            return Withdraw(first, last, reason)
        if kind == Kind.SEAL and len(body) == _SEAL.size:
            _, crc, length = _SEAL.unpack_from(body, 0)
            return Seal(crc, length)
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed record of kind {kind}: {exc}") from None
    raise ValueError(f"unknown record kind {kind}")


@attrs.frozen
class Damage:
    """The first bad record of a segment."""

    offset: int
    reason: str
    valid_after: bool
    """Whether a valid record follows the damage: then it is corruption, not a torn tail."""


@attrs.frozen
class ScanResult:
    records: list[Record]
    end: int
    """Offset just past the last good record: where a torn tail is cut off."""
    damage: Damage | None


def _check_at(buf: memoryview, pos: int) -> tuple[int, str | None]:
    """Check the record at ``pos``: returns (length, None) if it is intact, else (0, reason)."""
    if len(buf) - pos < _PREFIX.size:
        return 0, "truncated record prefix"
    length, crc = _PREFIX.unpack_from(buf, pos)
    if length == 0 or length > MAX_RECORD_BYTES:
        return 0, f"impossible record length {length}"
    end = pos + _PREFIX.size + length
    if end > len(buf):
        return 0, "record extends past the end of the file"
    if crc32c(buf[pos + _PREFIX.size : end]) != crc:
        return 0, "CRC mismatch"
    return length, None


def _valid_record_after(buf: memoryview, pos: int) -> bool:
    """Whether an intact, decodable record starts anywhere after ``pos``."""
    for candidate in range(pos + 1, len(buf) - _PREFIX.size):
        length, reason = _check_at(buf, candidate)
        if reason is None:
            start = candidate + _PREFIX.size
            try:
                decode_body(buf[start : start + length])
            except ValueError:
                continue
            return True
    return False


def scan(data: bytes, *, check_header: bool = True) -> ScanResult:
    """Decode a segment's records, stopping at the first bad one.

    A bad record is reported as :class:`Damage`, telling whether any valid record follows it; the
    caller decides whether that is a torn tail (nothing valid follows, in the last segment) or
    corruption. A segment shorter than its header is empty with damage at 0 (a torn creation).
    """
    buf = memoryview(data)
    if check_header:
        if len(buf) < len(HEADER):
            if HEADER.startswith(bytes(buf)):
                return ScanResult(
                    [], 0, Damage(0, "truncated segment header", False) if buf else None
                )
            return ScanResult([], 0, Damage(0, "bad segment header", False))
        if buf[: len(HEADER)] != HEADER:
            return ScanResult([], 0, Damage(0, "bad segment header", True))
        pos = len(HEADER)
    else:
        pos = 0
    records: list[Record] = []
    append = records.append
    size = len(buf)
    prefix_size = _PREFIX.size
    unpack = _PREFIX.unpack_from
    unpack_seq = _U64.unpack_from
    while pos < size:
        # Fast path for intact records; _check_at explains failures.
        if size - pos >= prefix_size:
            length, crc = unpack(buf, pos)
            end = pos + prefix_size + length
            if 0 < length <= MAX_RECORD_BYTES and end <= size:
                body = buf[pos + prefix_size : end]
                if crc32c(body) == crc:
                    if body[0] == _APPEND and length >= 9:  # the common record, inline
                        append(Append(unpack_seq(body, 1)[0], body[9:].tobytes()))
                        pos = end
                        continue
                    try:
                        append(decode_body(body))
                    except ValueError as exc:
                        return ScanResult(records, pos, Damage(pos, str(exc), True))
                    pos = end
                    continue
        _, reason = _check_at(buf, pos)
        assert reason is not None
        return ScanResult(records, pos, Damage(pos, reason, _valid_record_after(buf, pos)))
    return ScanResult(records, pos, None)


def seal_length(data: bytes) -> int | None:
    """If ``data`` (a whole segment) ends with a :class:`Seal` whose CRC matches every byte before
    it, the length of those bytes; else ``None``."""
    cut = len(data) - SEAL_RECORD_BYTES
    if cut < len(HEADER):
        return None
    length, crc = _PREFIX.unpack_from(data, cut)
    body = memoryview(data)[cut + _PREFIX.size :]
    if length != _SEAL.size or crc32c(body) != crc or body[0] != Kind.SEAL:
        return None
    _, seal_crc, seal_cut = _SEAL.unpack_from(body, 0)
    if seal_cut != cut or crc32c(memoryview(data)[:cut]) != seal_crc:
        return None
    return cut


def sealed_frames(data: bytes) -> tuple[list[int], list[int], list[int]] | None:
    """Where the appends of a sealed segment are: their seqs, and the start and end offset of each
    frame in ``data``; ``None`` if the seal does not match (then :func:`scan` tells where the damage
    is).

    The seal's CRC covers every record, so they are walked without checking each one's CRC, and
    nothing is copied: this is most of what replaying a long backlog costs the client.
    """
    stop = seal_length(data)
    if stop is None or data[: len(HEADER)] != HEADER:
        return None
    seqs: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    unpack = _PREFIX.unpack_from
    unpack_seq = _U64.unpack_from
    prefix_size = _PREFIX.size
    pos = len(HEADER)
    while pos < stop:
        length = unpack(data, pos)[0]
        start = pos + prefix_size
        pos = start + length
        if length == 0 or pos > stop:
            return None
        if data[start] == _APPEND:
            seqs.append(unpack_seq(data, start + 1)[0])
            starts.append(start + 9)
            ends.append(pos)
    return seqs, starts, ends
