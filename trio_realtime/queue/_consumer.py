"""The consumer side: one PersistentQueue per queue, reading every producer's journal."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from .._errors import JournalCorrupt
from .._groups import single_error
from .._journal import (
    AckLogRecord,
    Append,
    StreamAck,
    StreamForgotten,
    StreamWatermark,
    acquire_lock,
    encode_ack_record,
    is_lock_held,
    list_segments,
    read_ack_log,
    release_lock,
    scan_segment,
    write_ack_log,
)
from ._common import ItemKind, converter, decode_item, payload_of, queue_directory, runtime_socket

__all__ = ["PersistentQueue", "QueueItem", "open_queue"]

_T = TypeVar("_T")
_ACKS = "acks.log"
_COALESCE = 0.001


@attrs.define(eq=False)
class QueueItem:
    """One item: what a producer sent, and where it came from. ``await item.ack()`` when it is
    handled; until then it is delivered again after a restart (or after the visibility timeout)."""

    producer_id: str
    seq: int
    """Position in its producer's sequence (1, 2, ...): per-producer order."""
    enqueued_at: float
    """When the producer sent it (seconds since the epoch)."""
    payload: Any
    type_name: str | None
    """For an attrs instance: its class (``module.QualName``)."""
    _queue: PersistentQueue = attrs.field(repr=False)

    async def ack(self) -> None:
        """Mark it handled, durably: it is never delivered again."""
        await self._queue._ack([self])

    def as_type(self, cls: type[_T]) -> _T:
        """The payload structured as ``cls`` (cattrs), for types not given to ``open_queue``."""
        if isinstance(self.payload, cls):
            return self.payload
        return converter.structure(self.payload, cls)


@attrs.define
class _Acks:
    """One producer's acknowledged seqs: all up to ``watermark``, and ``extra`` above it."""

    watermark: int = 0
    extra: set[int] = attrs.Factory(set)

    def add(self, seq: int) -> None:
        if seq > self.watermark:
            self.extra.add(seq)
            while self.watermark + 1 in self.extra:
                self.watermark += 1
                self.extra.discard(self.watermark)

    def __contains__(self, seq: int) -> bool:
        return seq <= self.watermark or seq in self.extra


@attrs.define(eq=False)
class _AckBatch:
    items: list[QueueItem] = attrs.Factory(list)
    done: trio.Event = attrs.Factory(trio.Event)
    error: OSError | None = None


@attrs.define
class _ProducerLog:
    """Reads one producer's journal from where the last read stopped."""

    producer_id: str
    path: str
    segment: int = 0
    offset: int = 0
    last_seq: int = 0
    max_seq: dict[int, int] = attrs.Factory(dict)  # segment index -> highest seq in it
    torn: bool = False

    def read_new(self) -> list[Append]:
        found: list[Append] = []
        segments = list_segments(self.path)
        for position, (index, path) in enumerate(segments):
            if index < self.segment:
                continue
            if index > self.segment:
                self.segment, self.offset = index, 0
            try:
                with open(path, "rb") as f:
                    f.seek(self.offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            result = scan_segment(data, check_header=self.offset == 0)
            for record in result.records:
                if isinstance(record, Append) and record.seq > self.last_seq:
                    found.append(record)
                    self.last_seq = record.seq
                    self.max_seq[index] = record.seq
            self.offset += result.end
            last = position == len(segments) - 1
            damage = result.damage
            if damage is not None and (damage.valid_after or not last):
                raise JournalCorrupt(path, self.offset, damage.reason)
            self.torn = damage is not None  # an unfinished (or, if it is gone, torn) tail
        return found


class PersistentQueue:
    """The consumer of a queue: ``async for item in q: ...; await item.ack()``.

    Use :func:`open_queue`. Only one consumer per queue at a time (a second gets
    :class:`~trio_realtime.JournalLocked`).
    """

    def __init__(
        self,
        directory: str,
        *,
        types: Iterable[type[Any]] = (),
        visibility_timeout: float | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.directory = directory
        self.visibility_timeout = visibility_timeout
        self.poll_interval = poll_interval
        self._types = {f"{t.__module__}.{t.__qualname__}": t for t in types}
        self._producers = os.path.join(directory, "producers")
        self._acks: dict[str, _Acks] = {}
        self._logs: dict[str, _ProducerLog] = {}
        self._ready: deque[QueueItem] = deque()
        self._inflight: dict[tuple[str, int], tuple[QueueItem, float]] = {}
        self._changed = trio.Event()
        self._batch = _AckBatch()
        self._acking: set[tuple[str, int]] = set()
        self._flushing = False
        self._gc_due = False
        self._last_gc = -math.inf
        self._disk = trio.Lock()
        self._ack_fd = -1
        self._closed = False

    # --- public ----------------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Items read and not acknowledged (waiting or handed out)."""
        return len(self._ready) + len(self._inflight)

    def __aiter__(self) -> PersistentQueue:
        return self

    async def __anext__(self) -> QueueItem:
        while True:
            if self._closed:
                raise StopAsyncIteration
            self._expire()
            if self._ready:
                await trio.lowlevel.checkpoint()
                item = self._ready.popleft()
                self._inflight[item.producer_id, item.seq] = (item, trio.current_time())
                return item
            deadline = math.inf
            if self.visibility_timeout is not None and self._inflight:
                oldest = min(at for _, at in self._inflight.values())
                deadline = oldest + self.visibility_timeout
            with trio.move_on_at(deadline):
                await self._changed.wait()

    async def get(self) -> QueueItem:
        """The next item (waits for one)."""
        return await self.__anext__()

    async def clear_all(self) -> int:
        """Acknowledge every item sent so far, delivered or not; returns how many."""
        await self._refresh()
        items = [*self._ready, *(item for item, _ in self._inflight.values())]
        await self._ack(items)
        await self._collect_garbage(force=True)
        return len(items)

    async def _collect_garbage(self, *, force: bool = False) -> None:
        """Delete what acks freed: at most once per ``poll_interval`` (it lists and locks files),
        at once when ``force``d and acks happened since the last time."""
        due = trio.current_time() - self._last_gc >= self.poll_interval
        if (force and self._gc_due) or due:
            self._gc_due = False
            self._last_gc = trio.current_time()
            watermarks = {
                name: self._acks[name].watermark for name in self._logs if name in self._acks
            }
            async with self._disk:
                removed = await trio.to_thread.run_sync(self._delete_acked, watermarks)
            for name in removed:
                self._logs.pop(name, None)
                self._acks.pop(name, None)
        else:
            await trio.lowlevel.checkpoint()

    # --- reading ---------------------------------------------------------------------------------

    def _expire(self) -> None:
        if self.visibility_timeout is None:
            return
        now = trio.current_time()
        expired = [
            key for key, (_, at) in self._inflight.items() if now - at >= self.visibility_timeout
        ]
        for key in sorted(expired, key=lambda k: self._inflight[k][1], reverse=True):
            item, _ = self._inflight.pop(key)
            self._ready.appendleft(item)

    def _scan(self) -> list[tuple[str, Append]]:
        """(In a worker thread.) Every new record of every producer."""
        found: list[tuple[str, Append]] = []
        try:
            names = sorted(os.listdir(self._producers))
        except FileNotFoundError:
            return found
        for name in names:
            log = self._logs.get(name)
            if log is None:
                log = self._logs[name] = _ProducerLog(name, os.path.join(self._producers, name))
            found.extend((name, record) for record in log.read_new())
        return found

    async def _refresh(self) -> None:
        async with self._disk:  # one reader of the producers' files at a time
            found = await trio.to_thread.run_sync(self._scan)
        added = False
        for producer, record in found:
            if self._is_acked(producer, record.seq):
                continue
            envelope = decode_item(record.data)
            payload = payload_of(envelope, self._types)
            item = QueueItem(
                producer, record.seq, envelope.enqueued_at, payload, envelope.type_name, self
            )
            self._ready.append(item)
            added = True
        if added:
            self._wake_readers()

    def _wake_readers(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _watch(self, wake: socket.socket) -> None:
        """Read the producers at once when one says it sent something, else every poll_interval."""
        while True:
            await self._refresh()
            await self._collect_garbage()
            with trio.move_on_after(self.poll_interval):
                await trio.lowlevel.wait_readable(wake)
                # Woken: let a burst of sends land first (one read for all; a millisecond of
                # latency instead of a directory scan per item).
                await trio.sleep(_COALESCE)
            with contextlib.suppress(BlockingIOError):
                while True:  # one read for a whole burst of wake-ups
                    wake.recv(64)

    # --- acknowledging ---------------------------------------------------------------------------

    async def ack_many(self, items: Iterable[QueueItem]) -> None:
        """Acknowledge several items with one fsync."""
        await self._ack(list(items))

    def _is_acked(self, producer: str, seq: int) -> bool:
        acks = self._acks.get(producer)
        return acks is not None and seq in acks

    async def _ack(self, items: list[QueueItem]) -> None:
        """Write the acks; concurrent callers share one fsync (group commit)."""
        items = [
            i
            for i in items
            if not self._is_acked(i.producer_id, i.seq)
            and (i.producer_id, i.seq) not in self._acking
        ]
        if not items:
            await trio.lowlevel.checkpoint()
            return
        batch = self._batch
        batch.items.extend(items)
        self._acking.update((i.producer_id, i.seq) for i in items)
        if self._flushing:
            await batch.done.wait()
        else:
            self._flushing = True
            try:
                with trio.CancelScope(shield=True):  # a taken batch is always finished
                    while self._batch.items:
                        taken, self._batch = self._batch, _AckBatch()
                        await self._flush(taken)
            finally:
                self._flushing = False
        if batch.error is not None:
            raise batch.error

    async def _flush(self, batch: _AckBatch) -> None:
        data = b"".join(encode_ack_record(StreamAck(i.producer_id, i.seq)) for i in batch.items)
        try:
            await trio.to_thread.run_sync(self._write_acks, data)
        except OSError as exc:
            batch.error = exc
        else:
            never_handed_out = set()
            for item in batch.items:
                key = (item.producer_id, item.seq)
                self._acks.setdefault(item.producer_id, _Acks()).add(item.seq)
                if self._inflight.pop(key, None) is None:
                    never_handed_out.add(key)  # clear_all: still waiting in _ready
            if never_handed_out:  # one pass, not a search of _ready per acked item
                self._ready = deque(
                    i for i in self._ready if (i.producer_id, i.seq) not in never_handed_out
                )
            self._gc_due = True
        finally:
            self._acking.difference_update((i.producer_id, i.seq) for i in batch.items)
            batch.done.set()

    def _write_acks(self, data: bytes) -> None:
        os.write(self._ack_fd, data)
        os.fsync(self._ack_fd)

    def _delete_acked(self, watermarks: dict[str, int]) -> list[str]:
        """(In a worker thread.) Delete producer segments whose items are all acknowledged; and a
        producer's whole directory once it is gone (its lock is free) and all it sent is acked.
        Returns the producers removed."""
        removed = []
        for name, watermark in watermarks.items():
            log = self._logs[name]
            segments = list_segments(log.path)
            for index, path in segments[:-1]:  # never the segment a live producer writes
                if index < log.segment and log.max_seq.get(index, 0) <= watermark:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            if log.last_seq <= watermark and not is_lock_held(log.path):
                log.read_new()  # nothing can be added now: make sure nothing was
                if log.last_seq <= watermark:
                    shutil.rmtree(log.path, ignore_errors=True)
                    os.write(self._ack_fd, encode_ack_record(StreamForgotten(name)))
                    removed.append(name)
        return removed

    # --- opening and closing ---------------------------------------------------------------------

    def _load_acks(self) -> None:
        """Read acks.log, then rewrite it compacted (one watermark per producer)."""
        path = os.path.join(self.directory, _ACKS)
        self._acks = read_acks(path)
        compacted: list[AckLogRecord] = []
        for producer, acks in self._acks.items():
            compacted.append(StreamWatermark(producer, acks.watermark))
            compacted += [StreamAck(producer, seq) for seq in sorted(acks.extra)]
        write_ack_log(path, compacted)
        self._ack_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def _close(self) -> None:
        self._closed = True
        if self._ack_fd >= 0:
            os.close(self._ack_fd)
            self._ack_fd = -1
        self._wake_readers()


def read_acks(path: str) -> dict[str, _Acks]:
    """Fold an acks.log: per producer, what the consumer acknowledged."""
    acks: dict[str, _Acks] = {}
    for record in read_ack_log(path):
        if isinstance(record, StreamForgotten):
            acks.pop(record.stream, None)
        elif isinstance(record, StreamWatermark):
            mark = acks.setdefault(record.stream, _Acks())
            mark.watermark = max(mark.watermark, record.seq)
        else:
            acks.setdefault(record.stream, _Acks()).add(record.seq)
    return acks


@attrs.frozen
class PendingItem:
    producer_id: str
    seq: int
    enqueued_at: float
    size: int
    preview: str


def inspect_queue(directory: str) -> tuple[list[PendingItem], dict[str, bool]]:
    """What a queue holds, without changing anything (safe while producers and the consumer
    run): the items not acknowledged, oldest first per producer, and each producer's
    directory with whether its producer is still running."""
    acks = read_acks(os.path.join(directory, _ACKS))
    producers = os.path.join(directory, "producers")
    pending: list[PendingItem] = []
    alive: dict[str, bool] = {}
    try:
        names = sorted(os.listdir(producers))
    except FileNotFoundError:
        names = []
    for name in names:
        log = _ProducerLog(name, os.path.join(producers, name))
        try:
            records = log.read_new()
        except FileNotFoundError:
            continue  # collected by the consumer meanwhile: nothing pending there
        alive[name] = is_lock_held(log.path)
        mark = acks.get(name, _Acks())
        for record in records:
            if record.seq in mark:
                continue
            envelope = decode_item(record.data)
            if envelope.type_name is not None:
                preview = f"{envelope.type_name} {envelope.data[:60].decode('utf-8', 'replace')}"
            elif envelope.kind == ItemKind.BYTES:
                preview = f"bytes {envelope.data[:30].hex()}"
            else:
                preview = envelope.data[:80].decode("utf-8", "replace")
            pending.append(
                PendingItem(name, record.seq, envelope.enqueued_at, len(envelope.data), preview)
            )
    return pending, alive


@asynccontextmanager
async def open_queue(
    name: str,
    *,
    directory: str | os.PathLike[str] | None = None,
    types: Iterable[type[Any]] = (),
    visibility_timeout: float | None = None,
    poll_interval: float = 1.0,
) -> AsyncIterator[PersistentQueue]:
    """Consume the queue ``name`` for the block.

    Items sent while no consumer ran are delivered first; items not acknowledged come again after
    a restart, or after ``visibility_timeout`` seconds if given. ``types``: attrs classes whose
    instances come back as instances (others arrive as their unstructured dicts; see
    :meth:`QueueItem.as_type`). Producers wake the consumer within milliseconds; it also looks
    every ``poll_interval`` seconds.
    """
    data_dir = queue_directory(name, directory)  # checks the name
    os.makedirs(data_dir, exist_ok=True)
    lock = acquire_lock(os.path.join(data_dir, "consumer"))
    queue = PersistentQueue(
        data_dir, types=types, visibility_timeout=visibility_timeout, poll_interval=poll_interval
    )
    endpoint = runtime_socket(data_dir)
    wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    wake.setblocking(False)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(endpoint)  # stale: we hold the consumer lock, so no consumer listens there
        wake.bind(endpoint)
        await trio.to_thread.run_sync(queue._load_acks)
        await queue._refresh()
        with single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(queue._watch, wake)
                try:
                    yield queue
                    await queue._collect_garbage(force=True)  # what the last acks freed
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        queue._close()
        wake.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(endpoint)
        release_lock(lock)
