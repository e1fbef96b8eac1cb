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

import enum
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import orjson
import trio

from ._config import OutboxFullPolicy
from ._errors import JournalError, OutboxFull, RealtimeClosedError
from ._journal import Journal, Withdraw, Withdrawals
from ._protocol import encode_skip, encode_upstream, encode_upstreams, renumber_upstream

__all__ = [
    "Acked",
    "Outbox",
    "Outcome",
    "Receipt",
    "Rejected",
    "Unknown",
    "WithdrawReason",
    "Withdrawn",
]

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


class WithdrawReason(enum.StrEnum):
    """Why an event was withdrawn from the outbox before the server had it."""

    EXPIRED = "expired"
    """Its time to live (``send(..., ttl=)`` or ``RealtimeConfig.default_ttl``) ran out."""
    DROPPED = "dropped"
    """The outbox was full under ``outbox_full="drop_oldest"`` and it was the oldest."""
    DISCARDED = "discarded"
    """``conn.discard_pending()`` removed it."""


@attrs.frozen
class Withdrawn:
    """The event was withdrawn before the server had it: it is never stored (its seq reaches the
    server as a ``skip``, so the seqs stay contiguous). An event withdrawn while the server may
    already hold it waits for the answer, and resolves as :class:`Acked` if it did."""

    seq: int
    reason: WithdrawReason


@attrs.frozen
class Unknown:
    """``at_most_once`` only: the event went out, and the link dropped before its ack. The server
    may or may not have stored it; it is never sent again."""

    seq: int


Outcome = Acked | Rejected | Withdrawn | Unknown

#: Reason codes in journal records (``Withdraw.reason``); 4 marks at-most-once's unknown ones.
_CODES = {WithdrawReason.EXPIRED: 1, WithdrawReason.DROPPED: 2, WithdrawReason.DISCARDED: 3}
_REASONS = {code: reason for reason, code in _CODES.items()}
_UNKNOWN = 4

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
        """Wait for the outcome: :class:`Acked` or :class:`Rejected` (the server's verdict),
        :class:`Withdrawn` (expired, dropped or discarded before the server had it) or, at most
        once, :class:`Unknown`.

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
    # Went out since the last resume (so the server may hold it until a resume says otherwise;
    # sending it again is a replay).
    transmitted: bool = False
    withdrawn: int = 0  # the reason code once withdrawn (data is then its skip frame)
    deadline: float | None = None  # trio time its time to live runs out


#: Memory an event costs the outbox besides its frame's bytes: its entry, its receipt, its
#: idempotency key and its slot in the seq index (measured by ``nox -s bench``, benchmark 6). It is
#: counted against ``max_outbox_bytes``, so that limit bounds the memory the outbox really holds.
EVENT_OVERHEAD = 384

#: Ack latencies kept for the percentiles in the metrics.
LATENCY_SAMPLES = 1024


def _valid_ttl(ttl: object) -> bool:
    """A positive number of seconds (``math.inf``: no limit, overriding ``default_ttl``)."""
    return isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as ``(first, last)`` runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


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
        at_most_once: bool = False,
        default_ttl: float | None = None,
    ) -> None:
        self._journal = journal
        self._at_most_once = at_most_once
        self._default_ttl = default_ttl
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
        self.failed_attempts_total = 0
        """Events in flight (sent, not acknowledged) when a link dropped."""
        self.withdrawn_totals = dict.fromkeys(WithdrawReason, 0)
        self.unknown_total = 0
        self._voided = 0  # withdrawn entries still pending (their skips not acknowledged)
        # Time-to-live deadlines as a heap of (deadline, seq); acknowledged ones are skipped
        # when they come up (and the heap is rebuilt when they are most of it).
        self._deadlines: list[tuple[float, int]] = []
        self._deadline_added = trio.Event()
        self._link_open = False  # a link resumed and has not dropped since
        self._withdrawing = trio.Lock()  # one withdrawal at a time (drop_oldest, discard)
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        """Seconds from ``send`` being called to the ack, for the most recent acks."""
        self.on_outcome: Callable[[Outcome], None] | None = None
        # Events a previous process journaled but never saw acked, kept as the journal recovered
        # them (no object per event: after a long time offline there can be millions), and read
        # back from sealed segments only when the writer gets to them. Their seqs are consecutive:
        # [backlog.low, backlog.end) are still pending.
        self._backlog = journal.recovered
        self._backlog_rejected: set[int] = set()
        # Recovered seqs from here on are certainly not at the server (none, until the first
        # resume says; then those above its watermark, until this process sends them).
        self._backlog_certain = self._backlog.end
        # Recovered events withdrawn while the server may hold them: resolved when a resume or
        # an ack says whether it does.
        self._backlog_deferred = Withdrawals()
        # Recovered seqs withdrawn once the journal has the record (the writer sends their
        # skips from then on, never before: a crash before it would leave the server with seqs
        # consumed that the journal still holds as events).
        self._backlog_withdrawn = Withdrawals(list(journal.withdrawals))
        self._backlog_voided = sum(w.last - w.first + 1 for w in journal.withdrawals)
        self._drop_cursor = 0  # drop_oldest looks for live entries from here
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
    def live_count(self) -> int:
        """Pending events that are not withdrawn (what ``max_outbox_messages`` counts)."""
        return len(self._entries) - self._voided + len(self._backlog) - self._backlog_voided

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
        ttl: float | None = None,
    ) -> Receipt:
        """Journal one event and return its receipt (see :meth:`send_many`)."""
        # The hot path of every send(): _send without its lists and loops.
        _check_names(channel, event, idempotency_key)
        if ttl is None:
            ttl = self._default_ttl
        elif not _valid_ttl(ttl):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
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
        if ttl is not None:
            self._expire_at(entry, ttl)
        try:
            await journal.append(seq, data)
        except BaseException:
            self._forget([entry])
            raise
        return receipt

    async def send_many(
        self, channel: str, event: str, payloads: Sequence[Any], *, ttl: float | None = None
    ) -> list[Receipt]:
        """Journal several events as one write (one fsync under ``always``), in order."""
        if ttl is not None and not _valid_ttl(ttl):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if not payloads:
            await trio.lowlevel.checkpoint()
            return []
        return await self._send(channel, event, list(payloads), ttl)

    async def _send(
        self, channel: str, event: str, payloads: list[Any], ttl: float | None
    ) -> list[Receipt]:
        _check_names(channel, event, None)
        if ttl is None:
            ttl = self._default_ttl
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
        if ttl is not None:
            for entry in held:
                self._expire_at(entry, ttl)
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
        outbox is open. ``max_messages`` counts live events; withdrawn ones waiting for the
        server count in the bytes."""
        live = self.live_count
        return not (self._closed or self._renumbering) and (
            not self.pending_count
            or (live + count <= self._max_messages and self.pending_bytes < self._max_bytes)
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
            dropping = self._full_policy is OutboxFullPolicy.DROP_OLDEST and not self._renumbering
            if dropping and await self._drop_oldest(count):
                continue  # check again: the drop made room
            await self.wait_changed()
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise RealtimeClosedError("the connection is closed")

    # --- withdrawing events ----------------------------------------------------------------------

    def _expire_at(self, entry: _Entry, ttl: float) -> None:
        assert entry.sent_at is not None
        if ttl == math.inf:
            return
        entry.deadline = entry.sent_at + ttl
        heap = self._deadlines
        if len(heap) > 2 * len(self._entries) + 64:  # mostly acknowledged ones: rebuild
            heap[:] = [(d, seq) for d, seq in heap if self._is_live(self._entries.get(seq))]
            heapq.heapify(heap)
        heapq.heappush(heap, (entry.deadline, entry.seq))
        if heap[0][1] == entry.seq:
            self._deadline_added.set()

    def _is_live(self, entry: _Entry | None) -> bool:
        """Whether ``entry`` is pending, not withdrawn, and has no outcome yet."""
        return entry is not None and not entry.withdrawn and entry.receipt._outcome is None

    async def run_expiry(self) -> None:
        """Withdraw events whose time to live ran out, as it runs out (the connection runs it)."""
        while True:
            heap = self._deadlines
            now = trio.current_time()
            due = []
            while heap and heap[0][0] <= now:
                entry = self._entries.get(heapq.heappop(heap)[1])
                if entry is not None and self._is_live(entry) and entry.deadline is not None:
                    due.append(entry)
            if due:
                async with self._withdrawing:
                    await self._withdraw_entries(due, WithdrawReason.EXPIRED)
                continue
            self._deadline_added = trio.Event()
            with trio.move_on_at(heap[0][0] if heap else math.inf):
                await self._deadline_added.wait()

    def _void(self, entry: _Entry, code: int) -> None:
        """Make ``entry`` a withdrawn one: its skip frame replaces the event's bytes."""
        entry.withdrawn = code
        self._voided += 1
        skip = encode_skip(entry.seq)
        self._bytes += len(skip) - len(entry.data)
        entry.data = skip

    def _resolve_withdrawn(self, receipt: Receipt | None, seq: int, code: int) -> None:
        reason = _REASONS.get(code)
        if reason is None:  # at-most-once's unknown ones resolved when the link dropped
            return
        self.withdrawn_totals[reason] += 1
        self._resolve(receipt, Withdrawn(seq, reason))

    async def _withdraw_entries(self, entries: list[_Entry], reason: WithdrawReason) -> int:
        """Withdraw the live ones of ``entries`` (journaled first). One not sent since the last
        resume resolves at once; one that may be at the server resolves when an ack or the next
        resume says whether it is (:class:`Acked` if it is)."""
        code = _CODES[reason]
        # (Callers hold self._withdrawing, as _renumber does: seqs do not change meanwhile.)
        live = sorted((e for e in entries if self._is_live(e)), key=lambda e: e.seq)
        if not live:
            await trio.lowlevel.checkpoint()
            return 0
        await self._journal.withdraw(_runs([e.seq for e in live]), code)
        count = 0
        for entry in live:
            if self._entries.get(entry.seq) is not entry or not self._is_live(entry):
                continue  # acknowledged or rejected meanwhile
            self._void(entry, code)
            count += 1
            if not entry.transmitted:
                self._resolve_withdrawn(entry.receipt, entry.seq, code)
        self.wake()
        return count

    def _live_backlog(self) -> Iterator[tuple[int, int]]:
        """The recovered seqs that are pending and not withdrawn, as ``(first, last)`` runs."""
        backlog = self._backlog
        seq, end = backlog.low, backlog.end
        for record in self._backlog_withdrawn.within(seq, end):
            if seq < record.first:
                yield seq, record.first - 1
            seq = record.last + 1
        if seq < end:
            yield seq, end - 1

    async def _withdraw_backlog(self, runs: list[tuple[int, int]], reason: WithdrawReason) -> int:
        """Withdraw recovered events (no receipts: outcomes and counters only). Until the record
        is written they stay events (the writer may send them; an ack meanwhile is an ack);
        then what was not sent since the last resume resolves at once, the rest when an ack or
        the next resume says."""
        low = self._backlog.low
        runs = [(max(first, low), last) for first, last in runs if last >= low]
        if not runs:
            await trio.lowlevel.checkpoint()
            return 0
        code = _CODES[reason]
        await self._journal.withdraw(runs, code)
        low, certain = self._backlog.low, self._backlog_certain
        count = 0
        for first, last in runs:
            first = max(first, low)  # acknowledged meanwhile: those were acks
            if first > last:
                continue
            self._backlog_withdrawn.add(Withdraw(first, last, code))
            count += last - first + 1
            if first < certain:
                self._backlog_deferred.add(Withdraw(first, min(last, certain - 1), code))
            for seq in range(max(first, certain), last + 1):
                self._resolve_withdrawn(None, seq, code)
        self._backlog_voided += count
        self.wake()
        return count

    async def _drop_oldest(self, count: int) -> bool:
        """Withdraw the oldest live events until ``count`` more fit; returns whether any was."""
        async with self._withdrawing:
            if self._has_room(count):
                return True
            excess = self.live_count + count - self._max_messages
            over = self.pending_bytes - self._max_bytes + 1
            runs: list[tuple[int, int]] = []
            for first, last in self._live_backlog():  # oldest; frees no memory, only a place
                if excess <= 0:
                    break
                take = min(last - first + 1, excess)
                runs.append((first, first + take - 1))
                excess -= take
            victims: list[_Entry] = []
            entries = self._entries
            seq = max(self._low, self._drop_cursor)
            self._drop_cursor = seq
            while seq <= self._high and (excess > 0 or over > 0):
                entry = entries.get(seq)
                if entry is not None and self._is_live(entry):
                    victims.append(entry)
                    excess -= 1
                    over -= len(entry.data)
                elif not victims:
                    self._drop_cursor = seq + 1  # nothing live before it: start there next time
                seq += 1
            dropped = await self._withdraw_backlog(runs, WithdrawReason.DROPPED)
            dropped += await self._withdraw_entries(victims, WithdrawReason.DROPPED)
            return dropped > 0

    async def discard(self, channel: str | None = None) -> int:
        """Withdraw every live pending event (of ``channel``, if given); returns how many."""
        async with self._withdrawing:
            runs = list(self._live_backlog())
            if channel is not None and runs:
                runs = await self._backlog_of(channel, runs)
            count = await self._withdraw_backlog(runs, WithdrawReason.DISCARDED)
            entries = [
                e
                for e in self._entries.values()
                if self._is_live(e) and (channel is None or e.receipt.channel == channel)
            ]
            return count + await self._withdraw_entries(entries, WithdrawReason.DISCARDED)

    async def _backlog_of(self, channel: str, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The recovered seqs of ``runs`` whose events are on ``channel`` (reading sealed
        segments back as needed)."""
        backlog = self._backlog
        seqs: list[int] = []
        for first, last in runs:
            for seq in range(first, last + 1):
                if seq >= backlog.low and not backlog.is_loaded(seq):
                    part = backlog.part(seq)
                    frames = await trio.to_thread.run_sync(part.read)
                    if part.end > backlog.low:  # not acknowledged meanwhile
                        backlog.install(part, frames)
                if seq < backlog.low:  # acknowledged (perhaps while reading)
                    continue
                data = backlog.get(seq)
                if data is not None and orjson.loads(data).get("channel") == channel:
                    seqs.append(seq)
        return _runs(seqs)

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
        self._settle(server_ack_seq)
        self._next_send = server_ack_seq + 1
        self._link_open = True
        self.wake()

    def _settle(self, server_ack_seq: int) -> None:
        """After a resume: every seq above ``server_ack_seq`` is certainly not at the server (the
        server finished its older links' commits before answering), so what was withdrawn while
        it might have been resolves as withdrawn, and the rest is sent again."""
        for entry in self._entries.values():
            if entry.seq > server_ack_seq:
                entry.transmitted = False
                if entry.withdrawn and entry.receipt._outcome is None:
                    self._resolve_withdrawn(entry.receipt, entry.seq, entry.withdrawn)
        self._backlog_certain = max(server_ack_seq + 1, self._backlog.low)
        for record in self._backlog_deferred:  # the ack before resolved those it covers
            for seq in range(max(record.first, server_ack_seq + 1), record.last + 1):
                self._resolve_withdrawn(None, seq, record.reason)
        self._backlog_deferred.clear()

    def link_lost(self) -> None:
        """The link dropped: count the events in flight on it; under at-most-once, resolve them
        as :class:`Unknown` and never send them again (a skip goes in their place)."""
        if not self._link_open:
            return
        self._link_open = False
        backlog = self._backlog
        flying = [e for e in self._entries.values() if e.transmitted and e.receipt._outcome is None]
        self.failed_attempts_total += len(flying) + max(
            0, min(self._next_send, backlog.end) - backlog.low
        )
        if not self._at_most_once:
            return
        for entry in flying:
            if not entry.withdrawn:
                self._void(entry, _UNKNOWN)
            self.unknown_total += 1
            self._resolve(entry.receipt, Unknown(entry.seq))
        if flying:
            self.wake()

    async def _renumber(self, server_ack_seq: int) -> None:
        async with self._withdrawing:  # no withdrawal while seqs change
            await self._renumber_locked(server_ack_seq)

    async def _renumber_locked(self, server_ack_seq: int) -> None:
        known = self._known
        self._renumbering = True
        try:
            self._acknowledge(known, ())  # the server has everything we know it may have
            prefix = f"{self._journal.client_id}:"
            moved: list[tuple[_Entry, int, str, bytes]] = []  # the rest, in seq order, none sent
            for seq, entry in enumerate(self._entries.values(), server_ack_seq + 1):
                key = entry.receipt.idempotency_key
                if entry.withdrawn:  # stays withdrawn: its skip, under the new seq
                    moved.append((entry, seq, key, encode_skip(seq)))
                    continue
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
            outcome = entry.receipt._outcome
            if isinstance(outcome, Withdrawn):  # resolved already: under the seq it has now
                entry.receipt._outcome = Withdrawn(seq, outcome.reason)
            entry.data = frame
        self._entries = {entry.seq: entry for entry, *_ in moved}
        self._low = server_ack_seq + 1
        self._high = server_ack_seq + len(moved)
        self._known = server_ack_seq
        self.renumbered_total += len(moved)
        self._drop_cursor = 0
        self._deadlines = [
            (e.deadline, e.seq) for e in self._entries.values() if e.deadline is not None
        ]
        heapq.heapify(self._deadlines)

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
            withdrawals = self._backlog_withdrawn
            while seq < backlog_end and len(batch) < limit:
                if withdrawals and withdrawals.reason(seq) is not None:
                    data: bytes | None = encode_skip(seq)
                else:
                    data = backlog.get(seq)
                if data is None:  # not read back yet: see load_backlog
                    break
                size += len(data) + 1
                if batch and size > max_bytes:
                    break
                batch.append((seq, data))
                seq += 1
            self.replayed_total += len(batch)
            # What went out may be at the server from now on (until the next resume says).
            self._backlog_certain = max(self._backlog_certain, seq)
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
            if entry.withdrawn:  # its skip, or (sent before it was withdrawn) the event itself
                self._voided -= 1
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
        withdrawals, deferred = self._backlog_withdrawn, self._backlog_deferred
        voids = list(withdrawals.within(low, stop)) if withdrawals else []
        self._backlog_voided -= sum(w.last - w.first + 1 for w in voids)
        on_outcome = self.on_outcome
        if on_outcome is None and not rejected and not voids:  # no receipts, nobody listens
            self.acked_total += stop - low
            self.duplicates_total += sum(1 for seq in dup if low <= seq < stop)
        else:
            for seq in range(low, stop):
                if seq in rejected:
                    rejected.discard(seq)
                    continue
                if voids and withdrawals.reason(seq) is not None and deferred.reason(seq) is None:
                    continue  # its skip: resolved as withdrawn already
                is_dup = seq in dup
                if on_outcome is not None:
                    on_outcome(Acked(seq, is_dup))
                self.acked_total += 1
                self.duplicates_total += is_dup
        if deferred:  # withdrawn too late: the server had them (acked above)
            deferred.forget(ack_seq)
        if withdrawals:
            withdrawals.forget(ack_seq)
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
