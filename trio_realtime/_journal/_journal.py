"""The async journal: appends with group commit, acks, cursors, durability modes."""

from __future__ import annotations

import bisect
import enum
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from .._errors import ConfigError, JournalBroken, JournalClosed, JournalError
from .._groups import single_error
from ._backlog import Backlog
from ._files import (
    Rebase,
    Recovery,
    SegmentWriter,
    acquire_lock,
    load_client_id,
    recover,
    release_lock,
)
from ._format import (
    AckMark,
    Append,
    CursorMark,
    Record,
    Withdraw,
    encode_append,
    encode_record,
)

__all__ = ["Cursor", "Durability", "Journal", "JournalEntry", "Withdrawals", "open_journal"]

DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
_MAX_FSYNCS = 2  # fsyncs in flight at once (see Journal._dispatch)
#: How long ack and cursor records alone may wait for more of them, to be written together. A
#: consumer moves its cursor once per message; one write each was most of what durability cost it.
MARK_DELAY = 0.01
MIN_SEGMENT_BYTES = 4096


class Durability(enum.StrEnum):
    """How far an append has travelled when it returns (PROTOCOL.md section 7)."""

    ALWAYS = "always"
    """fsynced: survives a crash of the process and of the machine. Concurrent appends share one fsync
    (group commit) run in a worker thread."""
    BATCH = "batch"
    """written to the OS; fsynced at most ``batch_interval`` later. Survives a crash of the process; a
    machine crash may lose the appends of the last ``batch_interval``."""
    OS = "os"
    """written to the OS, never fsynced by us. Survives a crash of the process, not of the machine."""
    MEMORY = "memory"
    """not written anywhere. Lost with the process (at_most_once / best_effort_ordered)."""


JournalEntry = Append
"""An unacknowledged upstream event found in the journal: its ``seq`` and its exact wire bytes
(``data``)."""


@attrs.frozen
class Cursor:
    """The last downstream offset processed on a channel, and the epoch it was read under."""

    offset: int
    epoch: str | None


def _refuse_abort(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class _Batch:
    """Records handed to one commit, and the tasks waiting for it."""

    __slots__ = ("acked", "done", "durable", "error", "max_seq", "rebase", "records", "waiters")

    def __init__(self) -> None:
        # (seq of an append | record | rebase order, its encoded bytes)
        self.records: list[tuple[int | Record | Rebase, bytes]] = []
        self.durable = False  # does a waiter need this batch fsynced?
        self.rebase = False  # does it hold a rebase (files to create: write it in a thread)?
        self.acked = False  # does it hold an ack record (then acknowledged segments can go)?
        self.max_seq = 0  # highest seq appended in this batch
        self.waiters: list[trio.lowlevel.Task] = []
        self.done = False
        self.error: JournalError | None = None

    async def wait(self) -> None:
        """Wait until the batch is committed, deferring cancellation until then.

        Parking the task with an abort function that refuses is what a shielded wait does, without
        the cost of a cancel scope per append (which dominated the profile of the append path).
        """
        if self.done:
            await trio.lowlevel.checkpoint()
        else:
            self.waiters.append(trio.lowlevel.current_task())
            await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        self.done = True
        for task in self.waiters:
            trio.lowlevel.reschedule(task)
        self.waiters.clear()


class Withdrawals:
    """The withdrawn seqs above the ack watermark, as sorted, disjoint ranges (a discard of a
    million recovered events is one range, not a million entries)."""

    def __init__(self, records: Sequence[Withdraw] = ()) -> None:
        self._firsts: list[int] = []
        self._ranges: list[Withdraw] = []
        for record in records:
            self.add(record)

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __iter__(self) -> Iterator[Withdraw]:
        return iter(self._ranges)

    def add(self, record: Withdraw) -> None:
        """Record a withdrawal (of seqs not withdrawn yet), merged with an adjacent range of the
        same reason (drop_oldest withdraws runs of consecutive seqs, one at a time)."""
        index = bisect.bisect_left(self._firsts, record.first)
        before = self._ranges[index - 1] if index else None
        if (
            before is not None
            and before.reason == record.reason
            and before.last + 1 == record.first
        ):
            self._ranges[index - 1] = Withdraw(before.first, record.last, record.reason)
            return
        self._firsts.insert(index, record.first)
        self._ranges.insert(index, record)

    def reason(self, seq: int) -> int | None:
        """The reason ``seq`` was withdrawn for, or ``None`` if it was not."""
        index = bisect.bisect_right(self._firsts, seq) - 1
        if index >= 0 and self._ranges[index].last >= seq:
            return self._ranges[index].reason
        return None

    def within(self, low: int, stop: int) -> Iterator[Withdraw]:
        """The withdrawn ranges clipped to ``[low, stop)``, in seq order."""
        index = max(bisect.bisect_right(self._firsts, low) - 1, 0)
        for record in self._ranges[index:]:
            if record.first >= stop:
                break
            first, last = max(record.first, low), min(record.last, stop - 1)
            if first <= last:
                yield Withdraw(first, last, record.reason)

    def forget(self, ack_seq: int) -> None:
        """Drop the ranges the ack watermark covers."""
        index = 0
        while index < len(self._ranges) and self._ranges[index].last <= ack_seq:
            index += 1
        if index:
            del self._firsts[:index], self._ranges[:index]

    def clear(self) -> None:
        self._firsts.clear()
        self._ranges.clear()


class Journal:
    """A client's crash-safe journal. Open it with :func:`open_journal`.

    One task (the committer) owns the files; appenders hand it records and wait. Appends are ordered:
    the records reach the file in the order the ``append`` calls were made, which must be ``seq`` order
    without gaps.
    """

    def __init__(
        self,
        *,
        directory: str | None,
        client_id: str,
        durability: Durability,
        recovery: Recovery,
        writer: SegmentWriter | None,
        batch_interval: float,
    ) -> None:
        self.directory = directory
        self.client_id = client_id
        self.durability = durability
        self._writer = writer
        self._batch_interval = batch_interval
        self._last_seq = recovery.last_seq
        self._durable_seq = recovery.last_seq
        self._written_seq = recovery.last_seq
        self.on_written: Callable[[], None] | None = None
        """Called when :attr:`written_seq` moves (the outbox wakes its writer)."""
        self._ack_seq = recovery.ack_seq
        self._cursors = {
            name: Cursor(offset, epoch) for name, (offset, epoch) in recovery.cursors.items()
        }
        self._recovered = recovery.backlog()
        ack = recovery.ack_seq
        self._withdrawals = Withdrawals(
            [Withdraw(max(w.first, ack + 1), w.last, w.reason) for w in recovery.withdrawn]
        )
        self.truncated_bytes = recovery.truncated_bytes
        self._open = _Batch()
        # Ack and cursor records not handed to a batch yet: only the latest of each counts, so
        # the committer writes that one with the next batch (see _take_marks).
        self._ack_mark: AckMark | None = None
        self._cursor_marks: dict[str, CursorMark] = {}
        self._marks_awaited = False  # someone waits for the marks to be written: no delay
        self._wakeup = trio.Event()
        self._fsync_requested = False
        self._written = 0  # count of writes
        self._synced = 0  # writes covered by a finished fsync
        self._sync_started = 0  # writes covered by an fsync started (finished or in flight)
        self._jobs: list[trio.Event] = []  # fsyncs in flight, oldest first
        self._closed = False
        self._broken: JournalBroken | None = None

    # --- state -----------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest seq appended (including appends still waiting for durability)."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """The highest seq whose append has completed: as durable as the mode promises. Appends
        complete in seq order, so every seq up to it is durable too."""
        return self._durable_seq

    @property
    def written_seq(self) -> int:
        """The highest seq whose append record is written to the OS (or, in memory mode,
        appended): it survives a crash of this process, if not yet of the machine. Records are
        written in seq order, so every seq up to it is written too."""
        return self._written_seq

    @property
    def next_seq(self) -> int:
        """The seq the next append must carry."""
        return self._last_seq + 1

    @property
    def ack_seq(self) -> int:
        """The acknowledgement watermark: the server has every seq up to it."""
        return self._ack_seq

    @property
    def cursors(self) -> Mapping[str, Cursor]:
        """Per channel, the last downstream position recorded with :meth:`set_cursor`."""
        return self._cursors

    @property
    def recovered(self) -> Backlog:
        """The unacknowledged appends found when the journal was opened, in seq order; those of
        sealed segments are read back from disk when needed."""
        return self._recovered

    @property
    def withdrawals(self) -> Withdrawals:
        """The seqs withdrawn with :meth:`withdraw` and not acknowledged yet."""
        return self._withdrawals

    @property
    def broken(self) -> JournalBroken | None:
        """The error that failed the journal closed, if a write or fsync failed."""
        return self._broken

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise JournalClosed("the journal is closed")

    # --- writing ---------------------------------------------------------------------------------

    async def append(self, seq: int, data: bytes) -> None:
        """Append one upstream event (its wire bytes) under ``seq``; see :meth:`append_many`."""
        # The hot path of every send: kept free of the loops and lists of append_many.
        if self._closed:
            await trio.lowlevel.checkpoint()  # a cancelled caller sees Cancelled, not JournalClosed
        self._check_usable()
        if seq != self._last_seq + 1:
            raise ValueError(f"append of seq {seq} where {self._last_seq + 1} is next")
        self._last_seq = seq
        if self._writer is None:  # memory mode
            self._durable_seq = seq
            self._set_written(seq)
            await trio.lowlevel.cancel_shielded_checkpoint()  # appended: never report otherwise
            return
        batch = self._open
        batch.records.append((seq, encode_append(seq, data)))
        batch.max_seq = seq
        if self.durability is Durability.ALWAYS:
            batch.durable = True
        self._wakeup.set()
        await batch.wait()

    async def append_many(self, entries: Sequence[tuple[int, bytes]]) -> None:
        """Append events under consecutive seqs, starting at :attr:`next_seq`, as one write.

        Returns once the records are as durable as the journal's mode promises. Cancellation is
        deferred until then (it is bounded by one write and one fsync): an append either completes or
        raises, it never leaves the caller unsure whether its records are in the journal.

        Raises:
            ValueError: the seqs are not consecutive from :attr:`next_seq`.
            JournalBroken: a write or fsync failed, now or earlier.
            JournalClosed: the journal was closed.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
        self._check_usable()
        expected = self._last_seq + 1
        for offset, (seq, _) in enumerate(entries):
            if seq != expected + offset:
                raise ValueError(f"append of seq {seq} where {expected + offset} is next")
        if not entries:
            return
        self._last_seq = entries[-1][0]
        if self._writer is None:  # memory mode
            self._durable_seq = self._last_seq
            self._set_written(self._last_seq)
            await trio.lowlevel.cancel_shielded_checkpoint()  # appended: never report otherwise
            return
        batch = self._open
        batch.records.extend([(seq, encode_append(seq, data)) for seq, data in entries])
        batch.max_seq = self._last_seq
        self._wakeup.set()
        if self.durability is Durability.ALWAYS:
            batch.durable = True
        await batch.wait()

    async def withdraw(self, ranges: Sequence[tuple[int, int]], reason: int) -> None:
        """Record that the appends of each ``(first, last)`` range are withdrawn (not to be
        sent: a skip goes in their place), as durably as an append in this mode. Cancellation is
        deferred until the records are written, as for :meth:`append_many`.

        Raises:
            ValueError: the seqs are not pending (appended, above the ack watermark).
            JournalBroken: a write or fsync failed, now or earlier.
            JournalClosed: the journal was closed.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
        self._check_usable()
        for first, last in ranges:
            if not self._ack_seq < first <= last <= self._last_seq:
                raise ValueError(
                    f"withdrawal of {first}..{last} outside the pending seqs "
                    f"{self._ack_seq + 1}..{self._last_seq}"
                )
        records = [Withdraw(first, last, reason) for first, last in ranges]
        for record in records:
            self._withdrawals.add(record)
        if self._writer is None or not records:  # memory mode
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        batch = self._open
        batch.records.extend((record, encode_record(record)) for record in records)
        if self.durability is Durability.ALWAYS:
            batch.durable = True
        self._wakeup.set()
        await batch.wait()

    async def rebase(self, ack_seq: int, frames: Sequence[bytes]) -> None:
        """The server holds every seq up to ``ack_seq``, beyond what this journal acknowledged, and
        ``frames`` are all the events still unacknowledged here: renumber them from
        ``ack_seq + 1``, in order, durably (whatever the mode, except memory).

        This is for a journal that lost its tail in a crash after the server stored it: without
        it the next appends would reuse seqs the server already has, and it would drop them as
        retransmissions. The caller must append nothing until this returns. The appends written
        before are voided (see :meth:`SegmentWriter.rebase`); the frames must already carry their
        new seqs.

        Raises:
            ValueError: ``ack_seq`` is below the acknowledgement watermark.
            JournalBroken: a write or fsync failed, now or earlier.
            JournalClosed: the journal was closed.
        """
        await self._check_usable_for_bookkeeping()
        if ack_seq < self._ack_seq:
            raise ValueError(f"rebase to {ack_seq}, below the ack watermark {self._ack_seq}")
        appends = list(enumerate(frames, ack_seq + 1))
        self._withdrawals.clear()  # the frames carry skips for what was withdrawn
        self._ack_seq = ack_seq
        self._last_seq = ack_seq + len(appends)
        if self._writer is None:  # memory mode
            self._durable_seq = self._last_seq
            self._set_written(self._last_seq)
            await trio.lowlevel.cancel_shielded_checkpoint()  # done: the caller must see it done
            return
        # The renumbered ones are neither written nor durable yet.
        self._durable_seq = min(self._durable_seq, ack_seq)
        self._written_seq = min(self._written_seq, ack_seq)
        batch = self._open
        batch.records.append((Rebase(ack_seq, appends), b""))
        batch.max_seq = self._last_seq
        batch.durable = batch.rebase = True
        self._wakeup.set()
        await batch.wait()

    async def _check_usable_for_bookkeeping(self) -> None:
        # Acks and cursors arriving while the journal closes (from tasks being cancelled with it)
        # must not hang or turn a cancellation into an error: checkpoint first, so a cancelled
        # caller sees Cancelled; only a caller that is not being cancelled gets JournalClosed.
        if self._closed:
            await trio.lowlevel.checkpoint()
        self._check_usable()

    async def ack(self, ack_seq: int) -> None:
        """Record that the server stored every seq up to ``ack_seq``. Fully acked segments are then
        deleted.

        It does not wait for the record to be written: the committer writes the latest ack with
        its next batch, after the appends it covers, and it is not fsynced on its own. Losing it in
        a crash costs a retransmission that the server deduplicates, never data. (Waiting would
        hold the connection's reader behind the fsyncs of concurrent sends.)
        """
        await self._check_usable_for_bookkeeping()
        if ack_seq > self._last_seq:
            raise ValueError(f"ack_seq {ack_seq} beyond the last seq appended ({self._last_seq})")
        if ack_seq > self._ack_seq:
            self._ack_seq = ack_seq
            self._withdrawals.forget(ack_seq)
            if self._writer is not None:
                self._wake_for_marks()
                self._ack_mark = AckMark(ack_seq)
        await trio.lowlevel.checkpoint()

    async def set_cursor(
        self, channel: str, offset: int, epoch: str | None, *, wait: bool = False
    ) -> None:
        """Record the last downstream offset processed on ``channel``.

        Like :meth:`ack`, it returns without waiting for the record to be written (the latest
        cursor of each channel goes with the committer's next batch, not fsynced on its own), so
        an application processing messages is not held behind the fsyncs of concurrent sends. With
        ``wait``, it returns once the record is written (to the OS: it survives a crash of the
        process, not of the machine).
        """
        await self._check_usable_for_bookkeeping()
        self._cursors[channel] = Cursor(offset, epoch)
        await self._mark_cursor(CursorMark(channel, offset, epoch), wait)

    async def remove_cursor(self, channel: str) -> None:
        """Forget ``channel``'s cursor (after an unsubscribe)."""
        await self._check_usable_for_bookkeeping()
        if self._cursors.pop(channel, None) is not None:
            await self._mark_cursor(CursorMark(channel, None, None), False)
        else:
            await trio.lowlevel.checkpoint()

    async def _mark_cursor(self, mark: CursorMark, wait: bool) -> None:
        if self._writer is None:
            await trio.lowlevel.checkpoint()
            return
        self._wake_for_marks()
        self._cursor_marks[mark.channel] = mark
        if wait:
            self._marks_awaited = True
            self._wakeup.set()
            await self._open.wait()  # the marks go with the batch open now
        else:
            await trio.lowlevel.checkpoint()

    def _wake_for_marks(self) -> None:
        """Wake the committer for the first mark of a batch; it then lets more gather for up to
        :data:`MARK_DELAY`, unless something else needs writing first."""
        if not self._has_marks:
            self._wakeup.set()

    @property
    def _only_marks(self) -> bool:
        """Whether marks that nobody waits for are all there is to write."""
        return not (self._open.records or self._fsync_requested or self._marks_awaited)

    def _take_marks(self, batch: _Batch) -> None:
        """Hand the latest ack and cursor records to ``batch`` (after its appends, which an ack
        may cover)."""
        self._marks_awaited = False
        if self._ack_mark is not None:
            batch.records.append((self._ack_mark, encode_record(self._ack_mark)))
            batch.acked = True
            self._ack_mark = None
        if self._cursor_marks:
            batch.records.extend(
                (mark, encode_record(mark)) for mark in self._cursor_marks.values()
            )
            self._cursor_marks.clear()

    @property
    def _has_marks(self) -> bool:
        return self._ack_mark is not None or bool(self._cursor_marks)

    async def flush(self) -> None:
        """Wait until everything appended so far is fsynced (whatever the mode, except memory)."""
        self._check_usable()
        if self._writer is None:
            await trio.lowlevel.checkpoint()
            return
        batch = self._open
        self._fsync_requested = True
        self._wakeup.set()
        await batch.wait()

    # --- the committer ---------------------------------------------------------------------------

    async def _run_committer(self, *, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as jobs:
            task_status.started()
            try:
                while not self._closed:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    if self._only_marks and not self._closed:
                        with trio.move_on_after(MARK_DELAY):
                            await self._wakeup.wait()  # cut short by anything else to write
                        self._wakeup = trio.Event()
                    # Shielded: once a batch is taken it is committed and its waiters released,
                    # or they would wait forever. Bounded by one write and one fsync.
                    with trio.CancelScope(shield=True):
                        await self._dispatch(jobs)
            finally:
                # Cancelled or closing: commit what was handed to us, so no append that was
                # called is dropped, and release anyone waiting.
                with trio.CancelScope(shield=True):
                    await self._dispatch(jobs, final=True)
                    await self._wait_for_jobs()
                    # Records handed over while the last commit ran (by tasks being cancelled
                    # along with us) are committed too; then nothing more can be: closed.
                    while self._open.records or self._has_marks:
                        await self._dispatch(jobs, final=True)
                        await self._wait_for_jobs()
                    self._closed = True

    @property
    def _dirty(self) -> bool:
        """Whether something was written that no finished fsync covers."""
        return self._written > self._synced

    async def _dispatch(self, jobs: trio.Nursery, *, final: bool = False) -> None:
        """Commit the open batch.

        Records are always written from this task, in order. A batch that needs an fsync then gets
        a job that runs the fsync in a worker thread; up to :data:`_MAX_FSYNCS` jobs overlap, so
        the appenders woken by one fsync fill the next batch while it runs. Jobs release their
        batches strictly in order, and once any fsync has failed no later batch is reported
        durable (a later fsync that succeeds proves nothing about pages an earlier one lost).
        """
        batch, self._open = self._open, _Batch()
        self._take_marks(batch)
        sync = (
            batch.durable
            or self._fsync_requested
            or (final and self._dirty and self.durability is not Durability.OS)
        )
        self._fsync_requested = False
        writer = self._writer
        assert writer is not None
        if self._broken is not None:
            batch.error = self._broken
        elif batch.records or sync:
            try:
                if not batch.rebase and writer.fits(sum(len(data) for _, data in batch.records)):
                    # A write only copies into the page cache: cheaper here than a thread hop.
                    self._write(writer, batch)
                    self._set_written(batch.max_seq)
                    await trio.lowlevel.checkpoint()
                else:
                    # Rolling to a new segment (or rebasing) fsyncs and swaps the file: do it
                    # alone, in a thread.
                    await self._wait_for_jobs()
                    await trio.to_thread.run_sync(self._write, writer, batch)
                    self._set_written(batch.max_seq)
            except JournalBroken as exc:
                self._broken = batch.error = exc
            else:
                if sync:
                    while len(self._jobs) >= _MAX_FSYNCS:
                        await self._jobs[0].wait()
                    done = trio.Event()
                    previous = self._jobs[-1] if self._jobs else None
                    self._jobs.append(done)
                    jobs.start_soon(self._fsync_job, writer, batch, previous, done)
                    return
        if self._jobs:  # release in order: after the batches before it
            await self._jobs[-1].wait()
        self._finish(batch)

    def _set_written(self, seq: int) -> None:
        if seq > self._written_seq:
            self._written_seq = seq
            if self.on_written is not None:
                self.on_written()

    def _finish(self, batch: _Batch) -> None:
        if batch.error is None and batch.max_seq > self._durable_seq:
            self._durable_seq = batch.max_seq
        batch.finish()

    async def _fsync_job(
        self,
        writer: SegmentWriter,
        batch: _Batch,
        previous: trio.Event | None,
        done: trio.Event,
    ) -> None:
        with trio.CancelScope(shield=True):
            written = self._written
            self._sync_started = max(self._sync_started, written)
            error: JournalBroken | None = None
            try:
                await trio.to_thread.run_sync(writer.sync)
            except JournalBroken as exc:
                error = exc
            if previous is not None:
                await previous.wait()
            if self._broken is None and error is not None:
                self._broken = error
            if self._broken is not None:
                batch.error = self._broken
            else:
                self._synced = max(self._synced, written)
            self._finish(batch)
            self._jobs.remove(done)
            done.set()

    async def _wait_for_jobs(self) -> None:
        while self._jobs:
            await self._jobs[-1].wait()

    def _write(self, writer: SegmentWriter, batch: _Batch) -> None:
        if batch.records:
            writer.write(batch.records)
            self._written += 1
        if batch.acked:
            writer.compact()

    async def _run_batch_flusher(self) -> None:
        while True:
            await trio.sleep(self._batch_interval)
            if self._written > self._sync_started:  # written, and no fsync started covers it
                self._fsync_requested = True
                self._wakeup.set()

    async def _close(self) -> None:
        self._closed = True
        self._wakeup.set()


def _open_files(
    directory: str, durability: Durability, segment_bytes: int
) -> tuple[str, int, str, Recovery, SegmentWriter]:
    directory = os.path.abspath(directory)
    lock = acquire_lock(directory)
    try:
        client_id = load_client_id(directory)
        recovery = recover(directory, lazy=True)
        writer = SegmentWriter(
            directory,
            recovery,
            segment_bytes=segment_bytes,
            sync=durability is not Durability.OS,
        )
    except BaseException:
        release_lock(lock)
        raise
    return directory, lock, client_id, recovery, writer


@asynccontextmanager
async def open_journal(
    directory: str | os.PathLike[str] | None,
    *,
    durability: Durability | str = Durability.ALWAYS,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    batch_interval: float = 0.05,
) -> AsyncIterator[Journal]:
    """Open (creating if needed) and recover the journal in ``directory``, and close it on exit.

    Args:
        directory: the journal's directory; may be ``None`` only with ``durability="memory"``.
        durability: see :class:`Durability`.
        segment_bytes: a segment rolls over once it would grow past this size.
        batch_interval: under ``batch``, the longest time between a write and its fsync (seconds).

    Raises:
        JournalLocked: another process has the directory open.
        JournalCorrupt: a damaged record is followed by valid ones.
        JournalError: the directory cannot be created, read or written (the OS error chained).
        ConfigError: an option is invalid.
    """
    try:
        mode = Durability(durability)
    except ValueError:
        raise ConfigError("durability", f"must be one of {[m.value for m in Durability]}") from None
    if segment_bytes < MIN_SEGMENT_BYTES:
        raise ConfigError("segment_bytes", f"must be at least {MIN_SEGMENT_BYTES}")
    if not batch_interval > 0:
        raise ConfigError("batch_interval", "must be a positive number of seconds")

    if mode is Durability.MEMORY:
        journal = Journal(
            directory=None if directory is None else os.fspath(directory),
            client_id=f"c-{secrets.token_hex(16)}",
            durability=mode,
            recovery=Recovery(),
            writer=None,
            batch_interval=batch_interval,
        )
        try:
            yield journal
        finally:
            journal._closed = True
        return

    if directory is None:
        raise ConfigError("directory", f"is required with durability={mode.value!r}")
    try:
        path, lock, client_id, recovery, writer = await trio.to_thread.run_sync(
            _open_files, os.fspath(directory), mode, segment_bytes
        )
    except OSError as exc:
        # Not a directory, no permission, a read-only or full disk: say which journal.
        raise JournalError(f"cannot open the journal in {os.fspath(directory)!r}: {exc}") from exc
    journal = Journal(
        directory=path,
        client_id=client_id,
        durability=mode,
        recovery=recovery,
        writer=writer,
        batch_interval=batch_interval,
    )
    try:
        with single_error():
            async with trio.open_nursery() as nursery:
                await nursery.start(journal._run_committer)
                if mode is Durability.BATCH:
                    nursery.start_soon(journal._run_batch_flusher)
                try:
                    yield journal
                finally:
                    await journal._close()
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close_files, writer, lock)


def _close_files(writer: SegmentWriter, lock: int) -> None:
    try:
        writer.close()
    finally:
        release_lock(lock)
