"""The outbox: upstream events from ``send`` to the server's ack, through the journal.

``send`` assigns the next seq, encodes the frame once (the same bytes go to the journal and to the
wire), appends it to the journal and returns a :class:`Receipt` once the append is as durable as the
journal's mode promises. The connection's writer takes the events in seq order as soon as the
journal has written them (while it syncs them); the reader resolves receipts when acks (or
rejections) arrive. After a reconnect, the resume handshake tells the outbox what the server
already has, and transmission restarts from the first event it lacks; a server ahead of what it
can have from us means the journal lost its tail, and the events since are renumbered (resume).

Unacknowledged events are kept in a seq-ordered dict rather than only a memory channel: after a
resume the writer must go back to the first event the server lacks, and a channel cannot be rewound.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from ._config import OutboxFullPolicy
from ._errors import JournalError, OutboxFull, RealtimeClosedError
from ._journal import Journal
from ._protocol import encode_upstream, encode_upstreams, renumber_upstream

__all__ = ["Acked", "Outbox", "Outcome", "Receipt", "Rejected"]

logger = logging.getLogger("trio_realtime")


@attrs.frozen
class Acked:
    """The server durably stored the event. ``duplicate``: it already had it (a retransmission)."""

    seq: int
    duplicate: bool = False


@attrs.frozen
class Rejected:
    """The server definitively refused the event (``code`` says why); it will not be retried."""

    seq: int
    code: str
    message: str


Outcome = Acked | Rejected

# What a receipt holds once acknowledged, until its Acked is asked for: most never are, and an
# attrs object per event was a tenth of the client's time on the ack path.
_ACKED = object()
_ACKED_DUPLICATE = object()


class Receipt:
    """The handle ``send`` returns: the event's seq and key, and its outcome once known.

    ``seq`` (and a default ``idempotency_key``, which is made from it) change in one case only: the
    journal lost records the server had stored (a machine crash before their fsync), and the
    events journaled since were renumbered after the server's watermark (see the journal docs).
    """

    __slots__ = ("_done", "_outcome", "channel", "event", "idempotency_key", "seq")

    def __init__(self, seq: int, channel: str, event: str, idempotency_key: str) -> None:
        self.seq = seq
        self.channel = channel
        self.event = event
        self.idempotency_key = idempotency_key
        self._outcome: Outcome | object | None = None
        self._done: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<Receipt seq={self.seq} channel={self.channel!r} outcome={self.outcome!r}>"

    @property
    def outcome(self) -> Outcome | None:
        """The outcome, or ``None`` while the event is unacknowledged."""
        outcome = self._outcome
        if outcome is _ACKED or outcome is _ACKED_DUPLICATE:
            outcome = self._outcome = Acked(self.seq, outcome is _ACKED_DUPLICATE)
        return outcome  # type: ignore[return-value]

    async def wait(self) -> Outcome:
        """Wait for the server's verdict: :class:`Acked` or :class:`Rejected`.

        Receipts survive reconnects; an event still unacknowledged when the connection closes stays
        in the journal and is retransmitted by the next connection on the same journal.
        """
        if self._outcome is None:
            if self._done is None:
                self._done = trio.Event()
            await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()
        outcome = self.outcome
        assert outcome is not None
        return outcome

    def _resolve(self, outcome: Outcome | object) -> None:
        """Record the outcome (an :class:`Acked` may be given as ``_ACKED``/``_ACKED_DUPLICATE``)."""
        if self._outcome is None:
            self._outcome = outcome
            if self._done is not None:
                self._done.set()


@attrs.define
class _Entry:
    seq: int
    data: bytes
    receipt: Receipt
    sent_at: float | None  # trio time when send() was called; None if recovered from the journal
    transmitted: bool = False  # went out on some link already (so sending it again is a replay)


#: Memory an event costs the outbox besides its frame's bytes: its entry, its receipt, its
#: idempotency key and its slot in the seq index (measured by ``nox -s bench``, benchmark 6). It is
#: counted against ``max_outbox_bytes``, so that limit bounds the memory the outbox really holds.
EVENT_OVERHEAD = 384

#: Ack latencies kept for the percentiles in the metrics.
LATENCY_SAMPLES = 1024


def _check_names(channel: object, event: object, key: object) -> None:
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"channel must be a non-empty string, got {channel!r}")
    if not isinstance(event, str) or not event:
        raise ValueError(f"event must be a non-empty string, got {event!r}")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"idempotency_key must be a non-empty string, got {key!r}")


class Outbox:
    """Unacknowledged upstream events, backed by the journal."""

    def __init__(
        self,
        journal: Journal,
        *,
        max_messages: int,
        max_bytes: int,
        full_policy: OutboxFullPolicy,
    ) -> None:
        self._journal = journal
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._full_policy = full_policy
        self._entries: dict[int, _Entry] = {}
        self._bytes = 0
        self._next_send = journal.ack_seq + 1  # first seq the writer has not sent on this link
        # The highest seq the server may hold from us: journaled before this process started, or
        # sent by it. A server ahead of it holds events the journal lost (see resume).
        self._known = journal.last_seq
        self._renumbering = False  # sends wait while the outbox renumbers
        journal.on_written = self.wake  # the writer sends what the journal has written
        self._changed = trio.Event()  # something to send, or room in the outbox
        self._closed = False
        self.sent_total = 0
        self.acked_total = 0
        self.duplicates_total = 0
        self.rejected_total = 0
        self.replayed_total = 0
        self.renumbered_total = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        """Seconds from ``send`` being called to the ack, for the most recent acks."""
        self.on_outcome: Callable[[Outcome], None] | None = None
        # Events a previous process journaled but never saw acked, kept as the journal recovered
        # them (no object per event: after a long time offline there can be millions), and read
        # back from sealed segments only when the writer gets to them. Their seqs are consecutive:
        # [backlog.low, backlog.end) are still pending.
        self._backlog = journal.recovered
        self._backlog_rejected: set[int] = set()
        # Every seq pending in _entries lies in [_low, _high] (empty for now): acks walk that range
        # instead of iterating the dict from its front, which is slow once many were popped.
        self._low = self._backlog.end
        self._high = self._backlog.end - 1

    # --- state -----------------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Events sent (or being sent) but not yet acknowledged."""
        return len(self._entries) + len(self._backlog)

    @property
    def pending_bytes(self) -> int:
        """What the pending events hold in memory (recovered events once read back)."""
        backlog = self._backlog
        return self._bytes + backlog.loaded_bytes + EVENT_OVERHEAD * backlog.loaded_count

    # --- sending ---------------------------------------------------------------------------------

    async def send(
        self,
        channel: str,
        event: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
    ) -> Receipt:
        """Journal one event and return its receipt (see :meth:`send_many`)."""
        # The hot path of every send(): _send without its lists and loops.
        _check_names(channel, event, idempotency_key)
        if self._has_room(1):  # the common case, without the coroutine of _make_room
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await self._make_room(1)
        journal = self._journal
        seq = journal.next_seq
        key = idempotency_key if idempotency_key is not None else f"{journal.client_id}:{seq}"
        # Encoding can fail on a payload JSON cannot carry: before anything is reserved.
        data = encode_upstream(seq, channel, event, payload, int(time.time() * 1000), key)
        receipt = Receipt(seq, channel, event, key)
        entry = _Entry(seq, data, receipt, trio.current_time())
        # No checkpoint between reading next_seq and appending: seqs stay consecutive.
        self._entries[seq] = entry
        self._bytes += len(data) + EVENT_OVERHEAD
        if seq > self._high:
            self._high = seq
        self.sent_total += 1
        try:
            await journal.append(seq, data)
        except BaseException:
            self._forget([entry])
            raise
        return receipt

    async def send_many(self, channel: str, event: str, payloads: Sequence[Any]) -> list[Receipt]:
        """Journal several events as one write (one fsync under ``always``), in order."""
        if not payloads:
            await trio.lowlevel.checkpoint()
            return []
        return await self._send(channel, event, list(payloads))

    async def _send(self, channel: str, event: str, payloads: list[Any]) -> list[Receipt]:
        _check_names(channel, event, None)
        await self._make_room(len(payloads))
        journal = self._journal
        first = journal.next_seq
        prefix = f"{journal.client_id}:"
        # Encoding can fail on a payload JSON cannot carry: before anything is reserved.
        frames = encode_upstreams(first, channel, event, payloads, int(time.time() * 1000), prefix)
        # No checkpoint between reading next_seq and appending: seqs stay consecutive.
        entries = self._entries
        receipts: list[Receipt] = []
        held: list[_Entry] = []
        size = 0
        now = trio.current_time()
        for seq, data in enumerate(frames, first):
            receipt = Receipt(seq, channel, event, prefix + str(seq))
            receipts.append(receipt)
            entry = entries[seq] = _Entry(seq, data, receipt, now)
            held.append(entry)
            size += len(data)
        self._bytes += size + EVENT_OVERHEAD * len(frames)
        self._high = max(self._high, first + len(frames) - 1)
        self.sent_total += len(receipts)
        try:
            await journal.append_many(list(enumerate(frames, first)))
        except BaseException:
            self._forget(held)
            raise
        return receipts

    def _forget(self, entries: list[_Entry]) -> None:
        """Drop the entries of a send whose journal append failed (it raises to its caller)."""
        for entry in entries:
            if self._entries.get(entry.seq) is entry:
                del self._entries[entry.seq]
                self._bytes -= len(entry.data) + EVENT_OVERHEAD
                self.sent_total -= 1

    def _has_room(self, count: int) -> bool:
        """Whether ``count`` more events may be sent now (always, into an empty outbox), and the
        outbox is open."""
        pending = self.pending_count
        return not (self._closed or self._renumbering) and (
            not pending
            or (pending + count <= self._max_messages and self.pending_bytes < self._max_bytes)
        )

    async def _make_room(self, count: int) -> None:
        """Wait until ``count`` more events fit (or raise, by the policy). It is not a checkpoint
        unless it waits (the journal append that follows is one), but a caller already cancelled
        stops here, before anything is journaled."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._has_room(count):
            if self._closed:
                break
            if self._full_policy is OutboxFullPolicy.RAISE and not self._renumbering:
                raise OutboxFull(self.pending_count, self.pending_bytes)
            await self.wait_changed()
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise RealtimeClosedError("the connection is closed")

    # --- for the connection ----------------------------------------------------------------------

    def wake(self) -> None:
        """Wake whoever waits in :meth:`wait_changed` (the writer, a blocked ``send``)."""
        self._changed.set()

    async def wait_changed(self) -> None:
        """Wait until something changes: events became sendable, acks made room, or :meth:`wake`."""
        if self._changed.is_set():
            self._changed = trio.Event()
        await self._changed.wait()

    async def resume(self, server_ack_seq: int) -> None:
        """A new link resumed: the server has everything up to ``server_ack_seq``. Resolve those
        and make the writer start again at the first event the server lacks.

        A server ahead of every seq it can have from us (journaled before this process started,
        or sent by it) holds events whose journal records were lost: a machine crash before
        their fsync (they are sent while it runs), or a journal restored from an older copy.
        The events journaled since then carry the same seqs, and the server would drop them as
        retransmissions: they are renumbered after the server's watermark instead.
        """
        if server_ack_seq > self._known:
            await self._renumber(server_ack_seq)
        else:
            await self.ack(server_ack_seq, ())
        self._next_send = server_ack_seq + 1
        self.wake()

    async def _renumber(self, server_ack_seq: int) -> None:
        known = self._known
        self._renumbering = True
        try:
            self._acknowledge(known, ())  # the server has everything we know it may have
            prefix = f"{self._journal.client_id}:"
            moved: list[tuple[_Entry, int, str, bytes]] = []  # the rest, in seq order, none sent
            for seq, entry in enumerate(self._entries.values(), server_ack_seq + 1):
                key = entry.receipt.idempotency_key
                if key == f"{prefix}{entry.seq}":  # a default key follows its seq
                    key = f"{prefix}{seq}"
                moved.append((entry, seq, key, renumber_upstream(entry.data, seq, key)))
            await self._journal.rebase(server_ack_seq, [frame for *_, frame in moved])
        finally:
            self._renumbering = False
            self.wake()
        logger.warning(
            "the server holds seqs %d..%d that this client's journal lost (a crash before they "
            "were synced); %d unacknowledged events renumbered from %d",
            known + 1,
            server_ack_seq,
            len(moved),
            server_ack_seq + 1,
        )
        # Only now that the journal has them: a failed rebase leaves the entries as they were.
        for entry, seq, key, frame in moved:
            self._bytes += len(frame) - len(entry.data)
            entry.seq = entry.receipt.seq = seq
            entry.receipt.idempotency_key = key
            entry.data = frame
        self._entries = {entry.seq: entry for entry, *_ in moved}
        self._low = server_ack_seq + 1
        self._high = server_ack_seq + len(moved)
        self._known = server_ack_seq
        self.renumbered_total += len(moved)

    def ready(self, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Take up to ``limit`` events the writer may send now, in seq order, without going past
        ``max_bytes`` (but always at least one).

        An event is sent as soon as its journal record is written, while its fsync runs: its
        ``send`` still returns only once it is as durable as the journal's mode promises. So a
        crash of this process never leaves the server with an event the journal lacks; a crash
        of the machine can, and that is dealt with at the next resume."""
        last = self._journal.written_seq  # survives this process, durable or not yet
        batch: list[tuple[int, bytes]] = []
        size = 0
        seq = self._next_send
        backlog = self._backlog
        backlog_end = backlog.end
        if seq < backlog_end:  # recovered events first: all durable, all replays
            seq = max(seq, backlog.low)
            while seq < backlog_end and len(batch) < limit:
                data = backlog.get(seq)
                if data is None:  # not read back yet: see load_backlog
                    break
                size += len(data) + 1
                if batch and size > max_bytes:
                    break
                batch.append((seq, data))
                seq += 1
            self.replayed_total += len(batch)
            if seq < backlog_end:  # the batch is full
                self._next_send = seq
                return batch
        while seq <= last and len(batch) < limit:
            entry = self._entries.get(seq)
            if entry is None:  # acknowledged meanwhile
                seq += 1
                continue
            size += len(entry.data) + 1
            if batch and size > max_bytes:
                break
            batch.append((seq, entry.data))
            if entry.transmitted:
                self.replayed_total += 1
            entry.transmitted = True
            seq += 1
        self._next_send = seq
        if seq > self._known + 1:
            self._known = seq - 1
        return batch

    def has_ready(self) -> bool:
        return self._next_send <= self._journal.written_seq and not self.needs_load()

    def needs_load(self) -> bool:
        """Whether the next recovered events to send are still on disk (see :meth:`load_backlog`)."""
        backlog = self._backlog
        seq = max(self._next_send, backlog.low)
        return seq < backlog.end and not backlog.is_loaded(seq)

    async def load_backlog(self) -> None:
        """Read the next recovered events to send back from their journal segment, in a worker
        thread.

        Raises:
            JournalError: the segment cannot be read, or is damaged.
        """
        backlog = self._backlog
        seq = max(self._next_send, backlog.low)
        if seq >= backlog.end:
            await trio.lowlevel.checkpoint()
            return
        part = backlog.part(seq)
        try:
            entries = await trio.to_thread.run_sync(part.read)
        except JournalError:
            if part.end <= backlog.low:  # acknowledged meanwhile, and the segment deleted
                return
            raise
        backlog.install(part, entries)

    async def wait_ready(self) -> None:
        """Wait until :meth:`ready` has something to give (reading recovered events back from the
        journal when they are next)."""
        while not self.has_ready():
            if self.needs_load():
                await self.load_backlog()
            else:
                await self.wait_changed()

    async def ack(self, ack_seq: int, duplicates: Sequence[int]) -> int:
        """Resolve every receipt up to ``ack_seq`` and record the watermark in the journal (so
        fully acknowledged segments get deleted); returns how many receipts were resolved."""
        resolved = self._acknowledge(ack_seq, duplicates)
        await self._journal.ack(min(ack_seq, self._journal.last_seq))
        return resolved

    def _acknowledge(self, ack_seq: int, duplicates: Sequence[int]) -> int:
        dup = set(duplicates)
        resolved = 0
        now = trio.current_time()
        if self._backlog and ack_seq >= self._backlog.low:
            resolved += self._acknowledge_backlog(ack_seq, dup)
        backlog_resolved = resolved
        # The path of every ack: _resolve inlined, counters summed once.
        entries = self._entries
        on_outcome = self.on_outcome
        latencies = self.latencies
        seq = self._low
        end = min(ack_seq, self._high)
        freed = acked = duplicated = 0
        while seq <= end and entries:
            entry = entries.pop(seq, None)
            seq += 1
            if entry is None:  # acknowledged earlier, or its append failed
                continue
            freed += len(entry.data)
            resolved += 1
            receipt = entry.receipt
            if receipt._outcome is None:  # not rejected earlier
                is_dup = entry.seq in dup
                if on_outcome is not None:
                    outcome = Acked(entry.seq, is_dup)
                    receipt._resolve(outcome)
                    on_outcome(outcome)
                else:  # nobody listens: the Acked is made if the receipt is asked
                    receipt._resolve(_ACKED_DUPLICATE if is_dup else _ACKED)
                acked += 1
                duplicated += is_dup
                if entry.sent_at is not None:
                    latencies.append(now - entry.sent_at)
        self._bytes -= freed + EVENT_OVERHEAD * (resolved - backlog_resolved)
        self.acked_total += acked
        self.duplicates_total += duplicated
        self._low = max(self._low, seq)
        if resolved:
            self.wake()
        return resolved

    def _acknowledge_backlog(self, ack_seq: int, dup: set[int]) -> int:
        backlog, rejected = self._backlog, self._backlog_rejected
        low = backlog.low
        stop = min(ack_seq + 1, backlog.end)
        on_outcome = self.on_outcome
        if on_outcome is None and not rejected:  # no receipts to resolve, nobody listens
            self.acked_total += stop - low
            self.duplicates_total += sum(1 for seq in dup if low <= seq < stop)
        else:
            for seq in range(low, stop):
                if seq in rejected:
                    rejected.discard(seq)
                    continue
                is_dup = seq in dup
                if on_outcome is not None:
                    on_outcome(Acked(seq, is_dup))
                self.acked_total += 1
                self.duplicates_total += is_dup
        backlog.acknowledge(stop)
        return stop - low

    def reject(self, seq: int, code: str, message: str) -> None:
        """The server refused ``seq`` for good; the cumulative ack will move past it."""
        if self._backlog.low <= seq < self._backlog.end:
            if seq not in self._backlog_rejected:
                self._backlog_rejected.add(seq)
                self._resolve(None, Rejected(seq, code, message))
                self.rejected_total += 1
            return
        entry = self._entries.get(seq)
        if entry is not None and entry.receipt.outcome is None:
            self._resolve(entry.receipt, Rejected(seq, code, message))
            self.rejected_total += 1

    def _resolve(self, receipt: Receipt | None, outcome: Outcome) -> None:
        if receipt is not None:
            receipt._resolve(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def close(self) -> None:
        self._closed = True
        self.wake()
