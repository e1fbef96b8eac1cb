"""Codec: WebSocket message text <-> frames, with validation.

A message holds one frame (a JSON object) or a batch (a JSON array of frame objects). Decoding is
directional: :func:`decode_client_message` reads what a client sent (run by servers) and
:func:`decode_server_message` reads what a server sent (run by clients), because ``event`` means an
upstream event in one direction and a downstream event in the other.

Whatever the input, decoding either returns frames or raises :class:`ProtocolError` naming the field at
fault. No ``KeyError``, ``TypeError`` or ``ValueError`` escapes. Unknown fields are ignored.

orjson reads an integer literal beyond 64 bits as a float, silently changing it. In a protocol field
that float is refused like any non-integer; in what a client sends, a message that may hold such a
literal (a run of 20 digits, or of 19 after a minus sign) is read again, exactly, so that each such
literal comes out as a :class:`TooBigInteger`, which :func:`check_payload` refuses: the server then
refuses that one event, not the connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import orjson

from .._errors import LocalProtocolError, RemoteProtocolError
from ._frames import (
    JSON,
    Ack,
    ChannelPosition,
    ChannelResume,
    ClientFrame,
    Error,
    Frame,
    Message,
    Ping,
    Pong,
    PresenceDiff,
    PresenceMember,
    PresenceState,
    PresenceStatus,
    PresenceUpdate,
    ReadReceipt,
    Receipts,
    ReceiptsQuery,
    Resume,
    ResumeResponse,
    ServerFrame,
    Skip,
    Subscribe,
    Subscribed,
    Typing,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
)

__all__ = [
    "TooBigInteger",
    "check_payload",
    "decode_client_message",
    "decode_server_message",
    "encode_batch",
    "encode_frame",
    "join_encoded",
]

#: Integers on the wire are non-negative and fit a signed 64-bit integer.
MAX_INT = 2**63 - 1
#: Integers in payloads fit a signed 64-bit integer (what every store and encoder accepts).
MIN_INT = -(2**63)

_MISSING = object()


class TooBigInteger:
    """An integer literal of a client's message that does not fit 64 bits, as written.

    :func:`decode_client_message` puts one where the literal was (orjson would have read a float);
    :func:`check_payload` refuses it, and nothing encodes it.
    """

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return f"TooBigInteger({self.literal!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is TooBigInteger and other.literal == self.literal

    def __hash__(self) -> int:
        return hash((TooBigInteger, self.literal))


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | TooBigInteger):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # pragma: no cover - orjson produces nothing else


class _Fields:
    """Typed access to one JSON object's fields; every failure names the field's dotted path."""

    __slots__ = ("_obj", "_prefix")

    def __init__(self, obj: dict[str, Any], prefix: str) -> None:
        self._obj = obj
        self._prefix = prefix

    def fail(self, key: str, message: str) -> NoReturn:
        raise RemoteProtocolError(message, field=self._prefix + key)

    def _get(self, key: str, required: bool) -> Any:
        """The field's value; ``None`` if it is absent and optional. A JSON null comes back as
        ``None`` too: an optional field treats it as absent, a required one refuses it by type."""
        value = self._obj.get(key, _MISSING)
        if value is _MISSING:
            if required:
                self.fail(key, "missing required field")
            return None
        return value

    def integer(self, key: str, *, minimum: int = 0, required: bool = True) -> Any:
        value = self._get(key, required)
        if value is None and not required:
            return None
        if type(value) is not int:
            if type(value) is TooBigInteger:
                self.fail(key, f"integer {value.literal} out of range [{minimum}, {MAX_INT}]")
            self.fail(key, f"expected an integer, got {_type_name(value)}")
        if not minimum <= value <= MAX_INT:
            self.fail(key, f"integer {value} out of range [{minimum}, {MAX_INT}]")
        return value

    def string(self, key: str, *, required: bool = True, empty: bool = False) -> Any:
        value = self._get(key, required)
        if value is None and not required:
            return None
        if type(value) is not str:
            self.fail(key, f"expected a string, got {_type_name(value)}")
        if not empty and not value:
            self.fail(key, "must not be empty")
        return value

    def boolean(self, key: str, *, default: bool | None = None) -> bool:
        """Required unless it has a ``default`` (which an absent field or a null then gives)."""
        value = self._get(key, default is None)
        if value is None and default is not None:
            return default
        if type(value) is not bool:
            self.fail(key, f"expected a boolean, got {_type_name(value)}")
        return value

    def value(self, key: str) -> JSON:
        value = self._obj.get(key, _MISSING)
        if value is _MISSING:
            self.fail(key, "missing required field")
        return value

    def mapping(self, key: str, *, required: bool = True) -> dict[str, Any]:
        value = self._get(key, required)
        if value is None and not required:
            return {}
        if type(value) is not dict:
            self.fail(key, f"expected an object, got {_type_name(value)}")
        return value

    def sub(self, key: str, value: object) -> _Fields:
        if type(value) is not dict:
            self.fail(key, f"expected an object, got {_type_name(value)}")
        return _Fields(value, f"{self._prefix}{key}.")

    def map_of(self, key: str, build: Callable[[_Fields], Any], *, required: bool = True) -> Any:
        """An object whose values are objects, each decoded by ``build``."""
        obj = self.mapping(key, required=required)
        inner = _Fields(obj, f"{self._prefix}{key}.")
        return {name: build(inner.sub(name, value)) for name, value in obj.items()}

    def map_of_ints(self, key: str) -> dict[str, int]:
        obj = self.mapping(key)
        inner = _Fields(obj, f"{self._prefix}{key}.")
        return {name: inner.integer(name) for name in obj}

    def status(self, key: str) -> PresenceStatus:
        value = self.string(key)
        try:
            return PresenceStatus(value)
        except ValueError:
            self.fail(key, f"unknown presence status {value!r}")

    def int_list(self, key: str) -> tuple[int, ...]:
        value = self._get(key, False)
        if value is None:
            return ()
        if type(value) is not list:
            self.fail(key, f"expected an array, got {_type_name(value)}")
        result = []
        for index, item in enumerate(value):
            if type(item) is not int or not 0 <= item <= MAX_INT:
                self.fail(f"{key}[{index}]", "expected a non-negative integer")
            result.append(item)
        return tuple(result)


# --- per-frame decoders --------------------------------------------------------------------------


def _position(f: _Fields) -> ChannelPosition:
    return ChannelPosition(offset=f.integer("offset"), epoch=f.string("epoch", required=False))


def _channel_resume(f: _Fields) -> ChannelResume:
    return ChannelResume(
        epoch=f.string("epoch"), offset=f.integer("offset"), recovered=f.boolean("recovered")
    )


def _member(f: _Fields) -> PresenceMember:
    return PresenceMember(
        status=f.status("status"),
        metadata=f.mapping("metadata", required=False),
        since=f.integer("since"),
    )


def _resume(f: _Fields) -> Resume:
    return Resume(
        protocol=f.integer("protocol"),
        client_id=f.string("client_id"),
        token=f.string("token", required=False, empty=True),
        last_ack_seq=f.integer("last_ack_seq"),
        channels=f.map_of("channels", _position, required=False),
    )


def _resume_response(f: _Fields) -> ResumeResponse:
    return ResumeResponse(
        protocol=f.integer("protocol"),
        client_id=f.string("client_id"),
        session_id=f.string("session_id"),
        ack_seq=f.integer("ack_seq"),
        heartbeat_interval_ms=f.integer("heartbeat_interval_ms", minimum=1),
        max_frame_bytes=f.integer("max_frame_bytes", minimum=1),
        server_time=f.integer("server_time"),
        channels=f.map_of("channels", _channel_resume, required=False),
    )


def _upstream_event(f: _Fields) -> UpstreamEvent:
    return UpstreamEvent(
        seq=f.integer("seq", minimum=1),
        idempotency_key=f.string("idempotency_key"),
        channel=f.string("channel"),
        event=f.string("event"),
        payload=f.value("payload"),
        timestamp=f.integer("timestamp"),
    )


def _skip(f: _Fields) -> Skip:
    return Skip(seq=f.integer("seq", minimum=1))


def _downstream_event(f: _Fields) -> Message:
    return Message(
        channel=f.string("channel"),
        offset=f.integer("offset", minimum=1),
        epoch=f.string("epoch"),
        event=f.string("event"),
        payload=f.value("payload"),
        timestamp=f.integer("timestamp"),
        sender=f.string("sender", required=False),
        idempotency_key=f.string("idempotency_key", required=False),
        server_time=f.integer("server_time", required=False),
    )


def _ack(f: _Fields) -> Ack:
    return Ack(ack_seq=f.integer("ack_seq"), duplicates=f.int_list("duplicates"))


def _error(f: _Fields) -> Error:
    return Error(
        code=f.string("code"),
        message=f.string("message", empty=True),
        seq=f.integer("seq", minimum=1, required=False),
        fatal=f.boolean("fatal", default=False),
        rid=f.integer("rid", required=False),
    )


def _subscribe(f: _Fields) -> Subscribe:
    return Subscribe(
        rid=f.integer("rid"),
        channel=f.string("channel"),
        offset=f.integer("offset", required=False),
        epoch=f.string("epoch", required=False),
    )


def _subscribed(f: _Fields) -> Subscribed:
    return Subscribed(
        rid=f.integer("rid"),
        channel=f.string("channel"),
        epoch=f.string("epoch"),
        offset=f.integer("offset"),
        recovered=f.boolean("recovered"),
    )


def _unsubscribe(f: _Fields) -> Unsubscribe:
    return Unsubscribe(rid=f.integer("rid"), channel=f.string("channel"))


def _unsubscribed(f: _Fields) -> Unsubscribed:
    return Unsubscribed(rid=f.integer("rid"), channel=f.string("channel"))


def _ping(f: _Fields) -> Ping:
    return Ping(t=f.integer("t"))


def _pong(f: _Fields) -> Pong:
    return Pong(t=f.integer("t"))


def _presence_update(f: _Fields) -> PresenceUpdate:
    return PresenceUpdate(
        channel=f.string("channel"),
        status=f.status("status"),
        metadata=f.mapping("metadata", required=False),
    )


def _presence_state(f: _Fields) -> PresenceState:
    return PresenceState(channel=f.string("channel"), members=f.map_of("members", _member))


def _presence_diff(f: _Fields) -> PresenceDiff:
    return PresenceDiff(
        channel=f.string("channel"),
        joins=f.map_of("joins", _member, required=False),
        leaves=f.map_of("leaves", _member, required=False),
    )


def _typing_from_client(f: _Fields) -> Typing:
    return Typing(channel=f.string("channel"), typing=f.boolean("typing"))


def _typing_from_server(f: _Fields) -> Typing:
    return Typing(channel=f.string("channel"), typing=f.boolean("typing"), user=f.string("user"))


def _receipt_from_client(f: _Fields) -> ReadReceipt:
    return ReadReceipt(channel=f.string("channel"), offset=f.integer("offset"))


def _receipt_from_server(f: _Fields) -> ReadReceipt:
    return ReadReceipt(
        channel=f.string("channel"), offset=f.integer("offset"), user=f.string("user")
    )


def _receipts_query(f: _Fields) -> ReceiptsQuery:
    return ReceiptsQuery(rid=f.integer("rid"), channel=f.string("channel"))


def _receipts(f: _Fields) -> Receipts:
    return Receipts(
        rid=f.integer("rid"), channel=f.string("channel"), readers=f.map_of_ints("readers")
    )


_Decoder = Callable[[_Fields], Any]

# Filled by the frame declarations (``_kinds.py``): frame ``type`` (or meta ``kind``) -> decoder.
_CLIENT_TYPES: dict[str, _Decoder] = {}
_CLIENT_META: dict[str, _Decoder] = {}
_SERVER_TYPES: dict[str, _Decoder] = {}
_SERVER_META: dict[str, _Decoder] = {}


def _decode_frame(
    obj: object, prefix: str, types: dict[str, _Decoder], meta: dict[str, _Decoder]
) -> Any:
    if type(obj) is not dict:
        raise RemoteProtocolError(
            f"expected a frame object, got {_type_name(obj)}", field=prefix or None
        )
    fields = _Fields(obj, f"{prefix}." if prefix else "")
    frame_type = fields.string("type")
    if frame_type == "meta":
        kind = fields.string("kind")
        decoder = meta.get(kind)
        if decoder is None:
            fields.fail("kind", f"unknown meta kind {kind!r}")
    else:
        decoder = types.get(frame_type)
        if decoder is None:
            fields.fail("type", f"unknown frame type {frame_type!r}")
    return decoder(fields)


def _upstream_fast(obj: dict[str, Any]) -> UpstreamEvent | None:
    """An upstream event, the frame a server receives most, checked inline with the same rules as
    :func:`_upstream_event`; ``None`` if anything is off (the full decoder then names the field)."""
    seq = obj.get("seq")
    key = obj.get("idempotency_key")
    channel = obj.get("channel")
    event = obj.get("event")
    timestamp = obj.get("timestamp")
    if (
        type(seq) is int
        and 1 <= seq <= MAX_INT
        and type(timestamp) is int
        and 0 <= timestamp <= MAX_INT
        and type(key) is str
        and key
        and type(channel) is str
        and channel
        and type(event) is str
        and event
        and "payload" in obj
    ):
        return UpstreamEvent(seq, channel, event, obj["payload"], timestamp, key)
    return None


# --- integer literals beyond 64 bits ------------------------------------------------------------
#
# orjson reads an integer literal as an int if it fits 64 bits (signed or unsigned), else as a float.
# So a literal that becomes a float has 20 digits or more, or 19 after a minus sign; messages without
# such a run of digits (nearly all) are taken as orjson read them. A regular expression would look
# for the run at ~10 ns a byte, slower than orjson parses; bytes.translate and bytes.find do it in C
# at under 1 ns a byte, in three steps, each only if the one before found something:
# 1. every 4th byte: a run of 20 digits or minus signs holds 5 consecutive ones of those (a run of
#    17 or more may: 19-digit nanosecond timestamps do, 16-digit microsecond ones do not);
# 2. every byte, for 20 digits or minus signs in a row;
# 3. every byte, for 20 digits in a row, or a minus sign and 19 (a line of dashes passes step 2).

#: Digits and "-" become "0", every other byte ".".
_SAMPLE_TABLE = bytes(48 if 48 <= b <= 57 or b == 45 else 46 for b in range(256))
#: Digits become "0", "-" stays, every other byte becomes ".".
_RUN_TABLE = bytes(48 if 48 <= b <= 57 else 45 if b == 45 else 46 for b in range(256))
_SAMPLE_RUN = b"0" * 5
_POSITIVE_RUN = b"0" * 20
_NEGATIVE_RUN = b"-" + b"0" * 19


def _may_hold_big_integer(data: bytes | bytearray | memoryview | str) -> bool:
    """Whether ``data`` holds a run of 20 ASCII digits, or a minus sign and 19 digits (in a string
    too: a false alarm costs only the exact reading)."""
    # (bytes.find, not "in": "in" goes through the buffer protocol, 3x slower on small messages)
    if type(data) is str:
        sample = data[::4].encode("utf-8", "surrogatepass").translate(_SAMPLE_TABLE)
        if sample.find(_SAMPLE_RUN) < 0:
            return False
        raw: bytes | bytearray = data.encode("utf-8", "surrogatepass")
    else:
        raw = data.tobytes() if type(data) is memoryview else data  # type: ignore[assignment]
        if raw[::4].translate(_SAMPLE_TABLE).find(_SAMPLE_RUN) < 0:
            return False
    if raw.translate(_SAMPLE_TABLE).find(_POSITIVE_RUN) < 0:
        return False
    runs = raw.translate(_RUN_TABLE)
    return runs.find(_POSITIVE_RUN) >= 0 or runs.find(_NEGATIVE_RUN) >= 0


def _exact_int(literal: str) -> int | TooBigInteger:
    # 20 characters hold every 64-bit integer (and keep int() clear of its 4,300-digit limit).
    if len(literal) <= 20:
        value = int(literal)
        if MIN_INT <= value <= MAX_INT:
            return value
    return TooBigInteger(literal)


def _has_huge_float(obj: Any) -> bool:
    """Whether ``obj`` holds a float of integral value beyond 64 bits: what orjson makes of an
    integer literal too big for 64 bits (and of a float such as ``1e300``). Only then is the
    message read again, exactly: a run of digits inside a string costs this walk, not a
    re-read (the re-read reads ~10x slower than orjson, which a client could otherwise make
    the server pay on every message)."""
    stack = [obj]
    pop = stack.pop
    extend = stack.extend
    while stack:
        value = pop()
        kind = type(value)
        if kind is dict:
            extend(value.values())
        elif kind is list:
            extend(value)
        elif kind is float and (value >= _TWO_63 or value <= -_TWO_63) and value.is_integer():
            return True
    return False


_TWO_63 = float(2**63)


def _loads_exact(data: bytes | bytearray | memoryview | str) -> Any:
    """``data``, which orjson has read already (so it is valid JSON, without NaN, Infinity or lone
    surrogates), read again by the standard library, with :class:`TooBigInteger` for each integer
    literal beyond 64 bits."""
    try:
        text = data if type(data) is str else bytes(data).decode("utf-8")  # type: ignore[arg-type]
        return json.loads(text, parse_int=_exact_int)
    except RecursionError:
        # The standard library's parser nests on the C stack; orjson's limit (1,024) is deeper.
        raise RemoteProtocolError("message nested too deeply") from None
    except Exception as exc:  # orjson accepted it, so nothing else is expected; still ProtocolError
        raise RemoteProtocolError(f"message is not valid JSON: {exc}") from None


def _decode_message(
    data: bytes | bytearray | memoryview | str,
    types: dict[str, _Decoder],
    meta: dict[str, _Decoder],
) -> list[Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"message is not valid JSON: {exc}") from None
    except TypeError:
        raise RemoteProtocolError(
            f"message must be bytes or str, not {type(data).__name__}"
        ) from None
    if types is _CLIENT_TYPES and _may_hold_big_integer(data) and _has_huge_float(obj):
        obj = _loads_exact(data)
    if type(obj) is list:
        if not obj:
            raise RemoteProtocolError("a batch must hold at least one frame")
        if types is _CLIENT_TYPES:
            frames: list[Any] = []
            append = frames.append
            for i, item in enumerate(obj):
                frame = (
                    _upstream_fast(item)
                    if type(item) is dict and item.get("type") == "event"
                    else None
                )
                append(frame if frame is not None else _decode_frame(item, f"[{i}]", types, meta))
            return frames
        return [_decode_frame(item, f"[{i}]", types, meta) for i, item in enumerate(obj)]
    return [_decode_frame(obj, "", types, meta)]


def decode_client_message(data: bytes | bytearray | memoryview | str) -> list[ClientFrame]:
    """Decode one WebSocket message sent by a client: a frame or a batch, in order.

    An integer literal beyond 64 bits is a :class:`TooBigInteger` where it stands (refused in a
    protocol field; in a payload or metadata, :func:`check_payload` refuses it).

    Raises:
        ProtocolError: the message is not valid JSON, not a frame or batch of frames, or a frame has an
            unknown type, a missing field or a field of the wrong type (``field`` names it).
    """
    return _decode_message(data, _CLIENT_TYPES, _CLIENT_META)


def decode_server_message(data: bytes | bytearray | memoryview | str) -> list[ServerFrame]:
    """Decode one WebSocket message sent by a server: a frame or a batch, in order.

    Integer literals are read as orjson reads them: one beyond 64 bits is a float (refused in a
    protocol field; a payload keeps it, as a server that validates at the edge never sends one).

    Raises:
        ProtocolError: as :func:`decode_client_message`.
    """
    return _decode_message(data, _SERVER_TYPES, _SERVER_META)


def check_payload(value: object, *, max_depth: int) -> str | None:
    """``None`` if ``value`` is a JSON value that every store and encoder accepts, else why not.

    Refused: nesting of arrays and objects deeper than ``max_depth`` (a scalar is depth 0, ``[]`` and
    ``{}`` depth 1, ``{"a": [1]}`` depth 2); an integer outside [-2**63, 2**63 - 1] or a
    :class:`TooBigInteger`; a float that is not finite; an object key that is not a string; anything
    but ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None`` (exactly those types, as
    decoding produces them: not their subclasses). Runs on every event a server receives, so it is
    one loop over each level of nesting, without recursion.
    """
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return None
    if kind is not dict and kind is not list:
        return _check_scalar(value)
    if max_depth < 1:
        return f"nested deeper than {max_depth}"
    low, high = MIN_INT, MAX_INT
    level: list[Any] = [value]  # the containers at ``depth``
    depth = 1
    while True:
        inner: list[Any] | None = None  # those at depth + 1 (most payloads have none)
        for container in level:
            if type(container) is dict:
                for key in container:
                    if type(key) is not str:
                        return "object key is not a string"
                items = container.values()
            else:
                items = container
            for item in items:
                kind = type(item)
                if kind is str or item is None or kind is bool:
                    continue
                if kind is int:
                    if low <= item <= high:
                        continue
                elif kind is float:
                    if item - item == 0.0:  # not inf, not NaN
                        continue
                elif kind is dict or kind is list:
                    if inner is None:
                        inner = [item]
                    else:
                        inner.append(item)
                    continue
                return _check_scalar(item)
        if inner is None:
            return None
        if depth >= max_depth:
            return f"nested deeper than {max_depth}"
        depth += 1
        level = inner


def _check_scalar(value: object) -> str | None:
    if type(value) is int:
        return None if MIN_INT <= value <= MAX_INT else "integer out of the 64-bit range"
    if type(value) is float:
        return None if value - value == 0.0 else "number is not finite"
    if type(value) is TooBigInteger:
        return "integer too large for 64 bits"
    return f"not a JSON value: {type(value).__name__}"


def encode_frame(frame: Frame) -> bytes:
    """Encode one frame as the UTF-8 JSON bytes of a WebSocket message.

    Raises:
        LocalProtocolError: the frame holds something JSON cannot carry (a payload with a set, an
            object with non-string keys, an integer beyond 64 bits, ...).
    """
    try:
        return orjson.dumps(frame.to_wire())
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode as JSON: {exc}", field="payload") from None


def encode_upstream(
    seq: int, channel: str, event: str, payload: Any, timestamp: int, idempotency_key: str
) -> bytes:
    """``encode_frame(UpstreamEvent(...))`` without building the frame object: the same bytes, on
    the path of every send.

    Raises:
        LocalProtocolError: as :func:`encode_frame`.
    """
    try:
        data = orjson.dumps(
            {
                "type": "event",
                "seq": seq,
                "idempotency_key": idempotency_key,
                "channel": channel,
                "event": event,
                "payload": payload,
                "timestamp": timestamp,
            }
        )
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode as JSON: {exc}", field="payload") from None
    # orjson returns its whole output buffer (4 KiB for a small frame); the outbox keeps these
    # bytes until the ack, so keep an exact-size copy (a 200-byte event held 4 KiB before).
    return memoryview(data).tobytes()


def encode_upstreams(
    first_seq: int,
    channel: str,
    event: str,
    payloads: Sequence[Any],
    timestamp: int,
    key_prefix: str,
) -> list[bytes]:
    """:func:`encode_upstream` of each payload, under consecutive seqs from ``first_seq`` and the
    keys ``key_prefix + str(seq)``: the same bytes, with the parts every event shares (channel,
    event, timestamp) encoded once, and no dict per event.

    Raises:
        LocalProtocolError: as :func:`encode_frame`, for the first payload JSON cannot carry.
    """
    try:
        head = b'{"type":"event","seq":'
        key = b',"idempotency_key":' + orjson.dumps(key_prefix)[:-1]  # the closing quote follows
        middle = (
            b'",'
            + b'"channel":'
            + orjson.dumps(channel)
            + b',"event":'
            + orjson.dumps(event)
            + b',"payload":'
        )
        tail = b',"timestamp":' + orjson.dumps(timestamp) + b"}"
        join = b"".join
        dumps = orjson.dumps
        encoded = []
        for seq, payload in enumerate(payloads, first_seq):
            number = b"%d" % seq
            encoded.append(join((head, number, key, number, middle, dumps(payload), tail)))
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode as JSON: {exc}", field="payload") from None
    return encoded


def encode_skip(seq: int) -> bytes:
    """``encode_frame(Skip(seq))``: the frame a withdrawn event is sent as."""
    return b'{"type":"skip","seq":%d}' % seq


def renumber_upstream(data: bytes, seq: int, idempotency_key: str) -> bytes:
    """An upstream event frame made by :func:`encode_upstream`, under another ``seq`` and key;
    everything else as it was. (Rare: only when a journal that lost its tail renumbers.)"""
    fields = orjson.loads(data)
    fields["seq"] = seq
    fields["idempotency_key"] = idempotency_key
    return orjson.dumps(fields)


def join_encoded(encoded: Sequence[bytes]) -> bytes:
    """Join frames already encoded by :func:`encode_frame` into one batch message.

    A single frame is sent as itself, without the array around it.
    """
    if len(encoded) == 1:
        return encoded[0]
    if not encoded:
        raise LocalProtocolError("a batch must hold at least one frame")
    return b"[" + b",".join(encoded) + b"]"


def encode_batch(frames: Iterable[Frame]) -> bytes:
    """Encode frames as one batch message (or as a single frame if there is just one)."""
    return join_encoded([encode_frame(frame) for frame in frames])
