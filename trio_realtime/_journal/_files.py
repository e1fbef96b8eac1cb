"""The journal's file I/O, synchronous: lock, client id, recovery, segment writing, compaction.

Everything here blocks; the async :class:`~trio_realtime._journal._journal.Journal` calls it from a
worker thread. Directory layout::

    LOCK                      OS lock (flock) + the holder's pid
    client_id                 created once, atomically
    segment-000000000001.log  records (see _format.py), oldest first
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import fcntl
import os
import re
import secrets
from collections.abc import Sequence

import attrs
from crc32c import crc32c

from .._errors import JournalBroken, JournalCorrupt, JournalError, JournalLocked
from ._backlog import Backlog, BacklogPart, Frames
from ._format import (
    HEADER,
    AckLogRecord,
    AckMark,
    Append,
    Checkpoint,
    CursorMark,
    Record,
    Seal,
    Withdraw,
    ack_log_records,
    encode_ack_log,
    encode_append,
    encode_record,
    encode_records,
    scan,
    seal_length,
)

__all__ = [
    "LOCK_NAME",
    "Rebase",
    "Recovery",
    "SegmentInfo",
    "SegmentWriter",
    "acquire_lock",
    "create_segment_log",
    "fsync_dir",
    "is_lock_held",
    "list_segments",
    "load_client_id",
    "read_ack_log",
    "recover",
    "release_lock",
    "segment_path",
    "write_ack_log",
]

LOCK_NAME = "LOCK"
CLIENT_ID_NAME = "client_id"
_SEGMENT_RE = re.compile(r"^segment-(\d{12})\.log$")
_STAGED_SUFFIX = ".staged"
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def segment_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"segment-{index:012d}.log")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(directory: str) -> None:
    """fsync ``directory`` itself, so that files created, renamed or deleted in it stay so after a
    machine crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- lock and identity ---------------------------------------------------------------------------


def acquire_lock(directory: str) -> int:
    """Create ``directory`` if needed and take its exclusive lock; returns the lock's fd.

    Raises:
        JournalLocked: another process (or another open journal in this one) holds it.
    """
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        if exc.errno not in (errno_module.EWOULDBLOCK, errno_module.EAGAIN):
            raise JournalBroken(f"cannot lock journal {directory!r}: {exc}", exc.errno) from exc
        raise JournalLocked(directory, int(raw) if raw.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    """Release the lock :func:`acquire_lock` returned."""
    os.close(fd)  # closing the descriptor releases the flock


def is_lock_held(directory: str) -> bool:
    """Whether some process (this one included) holds ``directory``'s lock now: ``False`` once its
    holder is gone, even if it crashed. Changes nothing."""
    try:
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the lock if we took it
    return False


def load_client_id(directory: str) -> str:
    """Read the journal's ``client_id``, creating it (atomically, durably) on first use."""
    path = os.path.join(directory, CLIENT_ID_NAME)
    try:
        with open(path, encoding="ascii") as f:
            client_id = f.read().strip()
    except FileNotFoundError:
        client_id = f"c-{secrets.token_hex(16)}"
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, client_id.encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(directory)
        return client_id
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"cannot read {path!r}: {exc}") from exc
    if not _CLIENT_ID_RE.match(client_id):
        raise JournalCorrupt(path, 0, "client_id file does not hold a client id")
    return client_id


# --- recovery ------------------------------------------------------------------------------------


@attrs.define
class SegmentInfo:
    index: int
    path: str
    size: int
    max_seq: int = 0
    """Highest seq appended in this segment (0: none)."""
    crc: int = 0
    """CRC-32C of the segment's ``size`` bytes (kept for the active segment, to seal it)."""


@attrs.define
class JournalState:
    """What the records written so far add up to: the last seq assigned, the ack watermark and
    the cursors. Recovery folds every record into one; the writer keeps one for its checkpoints."""

    last_seq: int = 0
    ack_seq: int = 0
    cursors: dict[str, tuple[int, str | None]] = attrs.Factory(dict)
    withdrawn: list[Withdraw] = attrs.Factory(list)
    """Withdrawals with seqs above the ack watermark, in the order written."""

    def apply(self, record: Record) -> None:
        """Fold one record into the state."""
        if isinstance(record, Append):
            self.last_seq = max(self.last_seq, record.seq)
        elif isinstance(record, Withdraw):
            last = self.withdrawn[-1] if self.withdrawn else None
            if last is not None and last.reason == record.reason and last.last + 1 == record.first:
                self.withdrawn[-1] = Withdraw(last.first, record.last, record.reason)  # adjacent
            else:
                self.withdrawn.append(record)
        elif isinstance(record, AckMark):
            self.ack_seq = max(self.ack_seq, record.ack_seq)
            if self.withdrawn and self.withdrawn[0].last <= self.ack_seq:
                self.withdrawn = [w for w in self.withdrawn if w.last > self.ack_seq]
        elif isinstance(record, CursorMark):
            if record.offset is None:
                self.cursors.pop(record.channel, None)
            else:
                self.cursors[record.channel] = (record.offset, record.epoch)
        elif isinstance(record, Checkpoint):
            # A checkpoint's last_seq is the truth from there on: it is lower than the appends
            # before it only after a rebase (see SegmentWriter.rebase), which voided them.
            self.last_seq = record.last_seq
            self.ack_seq = max(self.ack_seq, record.ack_seq)
            self.cursors = dict(record.cursors)
            self.withdrawn = []  # the pending ones are written again after it


@attrs.define
class Recovery(JournalState):
    """What a journal directory holds, read back after a clean close or a crash."""

    segments: list[SegmentInfo] = attrs.Factory(list)
    records: list[Record] = attrs.Factory(list)
    """The records read (all of them, unless recovery was ``lazy``)."""
    sealed: list[BacklogPart] = attrs.Factory(list)
    """Sealed segments left unread (``lazy`` recovery), with the seqs each holds."""
    truncated_bytes: int = 0
    """Bytes of torn tail cut off the last segment."""

    @property
    def pending(self) -> list[Append]:
        """Appends the server has not acknowledged, in seq order (reading sealed segments)."""
        return list(self.backlog())

    def apply_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Fold in the checkpoint a segment starts with. One whose ``last_seq`` is below the
        appends read so far starts a rebased segment: every append before it is either
        acknowledged or renumbered into that segment, so none of them is pending any more."""
        if checkpoint.last_seq < self.last_seq:
            self.sealed.clear()
            self.records = [record for record in self.records if type(record) is not Append]
        self.apply(checkpoint)

    def backlog(self) -> Backlog:
        """The appends the server has not acknowledged, sealed segments left on disk."""
        low = self.ack_seq + 1
        parts = [part for part in self.sealed if part.end > low]
        read = [r for r in self.records if type(r) is Append and r.seq >= low]
        if read:
            frames = Frames.of([data for _, data in read])
            parts.append(BacklogPart(read[0].seq, read[-1].seq + 1, frames=frames))
        parts.sort(key=lambda part: part.first)
        return Backlog(parts, low=max(low, parts[0].first) if parts else low)


def list_segments(directory: str) -> list[tuple[int, str]]:
    """The segment files in ``directory`` as ``(index, path)``, oldest first.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
    """
    found = []
    for name in os.listdir(directory):
        match = _SEGMENT_RE.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def _read_checkpoint(path: str) -> Checkpoint | None:
    """The checkpoint a segment starts with, if it is intact."""
    with open(path, "rb") as f:
        head = f.read(len(HEADER) + 8)
        if len(head) < len(HEADER) + 8 or head[: len(HEADER)] != HEADER:
            return None
        length = int.from_bytes(head[len(HEADER) : len(HEADER) + 4], "little")
        body = f.read(min(length, 1 << 20))
    result = scan(head[len(HEADER) :] + body, check_header=False)
    first = result.records[0] if result.records else None
    return first if isinstance(first, Checkpoint) else None


def _sealed_size(path: str) -> int | None:
    """The size of a segment that ends with a seal matching the rest of the file, else ``None``."""
    with open(path, "rb") as f:
        data = f.read()
    return None if seal_length(data) is None else len(data)


def recover(directory: str, *, repair: bool = True, lazy: bool = False) -> Recovery:
    """Read every segment in order and rebuild the journal's state.

    A bad record in the last segment with no valid record after it is a torn tail from a crash: it is
    cut off (when ``repair``). Any other bad record raises :class:`JournalCorrupt`: a record is never
    skipped silently.

    With ``lazy``, a segment that ends with a seal, and is followed by one that starts with a
    checkpoint, is only checked (one CRC over the whole file) and left in :attr:`Recovery.sealed`:
    the next segment's checkpoint says what its records add up to, and which seqs it holds.
    """
    state = Recovery()
    if repair:
        _remove_staged(directory)
    segments = list_segments(directory)
    checkpoints = [_read_checkpoint(path) for _, path in segments] if lazy else []
    for position, (index, path) in enumerate(segments):
        if lazy and position + 1 < len(segments):
            start, after = checkpoints[position], checkpoints[position + 1]
            size = None if start is None or after is None else _sealed_size(path)
            if start is not None and after is not None and size is not None:
                state.apply_checkpoint(start)
                first, end = start.last_seq + 1, after.last_seq + 1
                state.segments.append(SegmentInfo(index, path, size, max(end - 1, 0)))
                if end > first:
                    state.sealed.append(BacklogPart(first, end, path=path))
                continue
        with open(path, "rb") as f:
            data = f.read()
        result = scan(data)
        damage = result.damage
        if damage is not None:
            last = position == len(segments) - 1
            if not last or damage.valid_after:
                raise JournalCorrupt(path, damage.offset, damage.reason)
            state.truncated_bytes = len(data) - result.end
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(result.end)
                    f.flush()
                    os.fsync(f.fileno())
        info = SegmentInfo(index, path, result.end, crc=crc32c(memoryview(data)[: result.end]))
        for record in result.records:
            if type(record) is Append:  # the common case, inline
                state.last_seq = max(state.last_seq, record.seq)
                info.max_seq = record.seq
            elif type(record) is Checkpoint:  # the first record of a segment
                state.apply_checkpoint(record)
            else:
                state.apply(record)
        state.records.extend(result.records)
        state.segments.append(info)
    return state


def _remove_staged(directory: str) -> None:
    """Delete a rebased segment whose creation a crash interrupted (it never took effect)."""
    for name in os.listdir(directory):
        if name.endswith(_STAGED_SUFFIX) and _SEGMENT_RE.match(name[: -len(_STAGED_SUFFIX)]):
            os.unlink(os.path.join(directory, name))


# --- ack logs ------------------------------------------------------------------------------------


def read_ack_log(path: str) -> list[AckLogRecord]:
    """The records of the ack log at ``path`` (none if it does not exist), in order. A torn tail
    (a write cut short by a crash, nothing valid after it) is ignored.

    Raises:
        JournalCorrupt: a damaged record is followed by valid ones.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    result = scan(data)
    if result.damage is not None and result.damage.valid_after:
        raise JournalCorrupt(path, result.damage.offset, result.damage.reason)
    return ack_log_records(result.records)


def write_ack_log(path: str, records: Sequence[AckLogRecord]) -> None:
    """Replace the ack log at ``path`` with one holding ``records``, atomically and durably (a
    crash leaves the old file or the new one)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(encode_ack_log(records))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


# --- writing -------------------------------------------------------------------------------------


@attrs.frozen
class Rebase:
    """Not a record but an order to the writer (see :meth:`SegmentWriter.rebase`): the server holds
    every seq up to ``ack_seq``, and ``appends`` (consecutive seqs from ``ack_seq + 1``) replace
    every unacknowledged append written so far."""

    ack_seq: int
    appends: list[tuple[int, bytes]]


class SegmentWriter:
    """Appends encoded records to the active segment, rolls segments, deletes fully acked ones.

    Any OS error while writing or syncing breaks the writer for good (:class:`JournalBroken`): after a
    failed fsync the kernel may have dropped the dirty pages, so nothing written can be trusted to be
    on disk, and retrying would pretend it is.
    """

    def __init__(
        self, directory: str, recovery: Recovery, *, segment_bytes: int, sync: bool
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.sync_enabled = sync
        ack = recovery.ack_seq
        pending = [
            Withdraw(max(w.first, ack + 1), w.last, w.reason)
            for w in recovery.withdrawn
            if w.last > ack
        ]
        # The withdrawals recovered go on into the segments this writer starts (it writes them
        # after each checkpoint), or a later recovery that leaves the sealed ones unread would
        # miss them.
        self.state = JournalState(recovery.last_seq, ack, dict(recovery.cursors), pending)
        self.segments = list(recovery.segments)
        self.broken: JournalBroken | None = None
        self._fd = -1
        self._start_size = 0  # size of the active segment right after its header and checkpoint
        self._guard(self._open_active)

    # --- failure handling ------------------------------------------------------------------------

    def _guard(self, action: object, *args: object) -> None:
        if self.broken is not None:
            raise self.broken
        try:
            action(*args)  # type: ignore[operator]
        except OSError as exc:
            self.broken = JournalBroken(
                f"journal write failed in {self.directory!r}: {exc}; the journal is closed to "
                "further appends because data whose write or fsync failed cannot be assumed safe",
                exc.errno,
            )
            raise self.broken from exc

    # --- segments --------------------------------------------------------------------------------

    def _open_active(self) -> None:
        if self.segments and self.segments[-1].size >= len(HEADER):
            active = self.segments[-1]
            self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self._start_size = len(HEADER)
        else:
            if self.segments:  # a segment torn during its creation: start it again
                torn = self.segments.pop()
                os.unlink(torn.path)
            index = self.segments[-1].index + 1 if self.segments else 1
            self._create_segment(index)

    def _create_segment(self, index: int) -> None:
        path = segment_path(self.directory, index)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._fd = fd
        start = self._segment_start()
        _write_all(fd, start)
        if self.sync_enabled:
            os.fsync(fd)
            fsync_dir(self.directory)
        self._start_size = len(start)
        self.segments.append(SegmentInfo(index, path, len(start), crc=crc32c(start)))

    def _segment_start(self) -> bytes:
        """A new segment's first bytes: the header, and a checkpoint of the state so far."""
        state = self.state
        ack = state.ack_seq
        pending = [
            Withdraw(max(w.first, ack + 1), w.last, w.reason)
            for w in state.withdrawn
            if w.last > ack
        ]
        state.withdrawn = pending
        checkpoint = Checkpoint(state.last_seq, ack, dict(state.cursors))
        return HEADER + encode_records([checkpoint, *pending])

    def _roll(self) -> None:
        active = self.segments[-1]
        seal = encode_record(Seal(active.crc, active.size))
        _write_all(self._fd, seal)
        active.size += len(seal)
        if self.sync_enabled:
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._create_segment(self.segments[-1].index + 1)

    def rebase(self, rebase: Rebase) -> None:
        """Start a new segment whose checkpoint says the server holds every seq up to
        ``rebase.ack_seq``, holding ``rebase.appends``, and delete the segments before it.

        This is how a journal that lost its tail (a machine crash under ``batch``, ``os``, or while
        an ``always`` fsync was in flight) stops reusing seqs the server already has: the appends
        written since are renumbered past the server's watermark. The segment is written and
        synced under a staged name and renamed into place: the rename is the commit, so a crash
        leaves either the journal as it was (recovery deletes the staged file) or the rebase
        done. A checkpoint whose ``last_seq`` is below the appends before it voids them, which
        covers a crash before the old segments are deleted.
        """
        self._guard(self._rebase, rebase)

    def _rebase(self, rebase: Rebase) -> None:
        # The active segment is not sealed: it is deleted below, or void if a crash comes first.
        os.close(self._fd)
        self._fd = -1
        state = self.state
        state.last_seq = rebase.ack_seq
        state.ack_seq = max(state.ack_seq, rebase.ack_seq)
        state.withdrawn = []  # withdrawn events are renumbered as skip frames
        start = self._segment_start()
        data = b"".join([start, *(encode_append(seq, frame) for seq, frame in rebase.appends)])
        index = self.segments[-1].index + 1
        path = segment_path(self.directory, index)
        staged = path + _STAGED_SUFFIX
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            if self.sync_enabled:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(staged, path)
        if self.sync_enabled:
            fsync_dir(self.directory)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if rebase.appends:
            state.last_seq = rebase.appends[-1][0]
        for old in self.segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old.path)
        self._start_size = len(start)
        self.segments = [SegmentInfo(index, path, len(data), state.last_seq, crc32c(data))]

    # --- operations ------------------------------------------------------------------------------

    def write(self, records: Sequence[tuple[int | Record | Rebase, bytes]]) -> None:
        """Write encoded records in order (no fsync), rolling to a new segment at the size limit.

        Each item is ``(what, encoded bytes)`` where ``what`` is the record, or just the seq of an
        :class:`Append` (the common case, kept cheap).
        """
        self._guard(self._write, records)

    def _write(self, records: Sequence[tuple[int | Record | Rebase, bytes]]) -> None:
        chunk: list[bytes] = []
        active = self.segments[-1]
        for record, data in records:
            if type(record) is Rebase:  # rare: only after the journal lost its tail
                if chunk:
                    self._write_chunk(active, chunk)
                    chunk.clear()
                self._rebase(record)
                active = self.segments[-1]
                continue
            over = active.size + len(data) > self.segment_bytes
            if over and active.size > self._start_size:
                self._write_chunk(active, chunk)
                chunk.clear()
                self._roll()
                active = self.segments[-1]
            chunk.append(data)
            active.size += len(data)
            if type(record) is int:  # the common case: an append, given by its seq
                self.state.last_seq = active.max_seq = record
            else:
                assert not isinstance(record, int | Rebase)
                self.state.apply(record)
                if isinstance(record, Append):
                    active.max_seq = record.seq
        if chunk:
            self._write_chunk(active, chunk)

    def _write_chunk(self, active: SegmentInfo, chunk: list[bytes]) -> None:
        data = b"".join(chunk)
        active.crc = crc32c(data, active.crc)
        _write_all(self._fd, data)

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit in the active segment without rolling to a new one."""
        return self.segments[-1].size + nbytes <= self.segment_bytes

    def sync(self) -> None:
        """fsync the active segment."""
        self._guard(os.fsync, self._fd)

    def compact(self) -> int:
        """Delete the oldest segments whose appends are all acknowledged (never the active one).
        Returns how many were deleted."""
        deleted = 0
        while len(self.segments) > 1 and self.segments[0].max_seq <= self.state.ack_seq:
            victim = self.segments.pop(0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(victim.path)
            deleted += 1
        return deleted

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def create_segment_log(directory: str, *, segment_bytes: int, sync: bool) -> SegmentWriter:
    """A writer for a new segment log in ``directory``, which must hold no segments yet (lock it
    first with :func:`acquire_lock`, which also creates it).

    Write appends with ``writer.write([(seq, encode_append(seq, data))])``, make them durable with
    ``writer.sync()``, check ``writer.fits(n)`` before a write if a concurrent ``sync`` must not
    see the segment roll, and ``writer.close()`` it. With ``sync=False`` segment creation is not
    fsynced either. A reader follows it with :func:`list_segments` and
    :func:`~trio_realtime._journal._format.scan`.

    Raises:
        JournalBroken: the first segment cannot be created.
    """
    return SegmentWriter(directory, Recovery(), segment_bytes=segment_bytes, sync=sync)
