"""The async journal: appends, group commit, durability modes, acks, cursors, failures."""

from __future__ import annotations

import errno
import itertools
import os
import threading
from typing import Any

import pytest
import trio
import trio.testing

from trio_realtime import (
    ConfigError,
    Durability,
    JournalBroken,
    JournalClosed,
    JournalLocked,
    RealtimeBrokenError,
    RealtimeClosedError,
)
from trio_realtime._journal import Append, JournalEntry, open_journal, recover
from trio_realtime._journal._format import CursorMark
from trio_realtime._journal._journal import MARK_DELAY

from ..helpers import held_fsyncs
from .helpers import append_n, frame, segments


class FsyncCounter:
    """Wraps os.fsync to count calls (from any thread) and optionally fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.fail_with: int | None = None
        self.fail_only: set[int] = set()  # with fail_with: fail just these calls (1-based)
        self._real = os.fsync
        self._changed = threading.Condition()
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        with self._changed:
            self.calls += 1
            self._changed.notify_all()
        if self.fail_with is not None and (not self.fail_only or self.calls in self.fail_only):
            raise OSError(self.fail_with, os.strerror(self.fail_with))
        self._real(fd)

    async def wait_beyond(self, calls: int, within: float = 60) -> None:
        """Wait until more than ``calls`` fsyncs happened, in real time (a worker thread waits):
        under a MockClock, virtual time races ahead while the fsync runs in its own thread, so a
        virtual deadline can pass before a slow disk has answered."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self.calls > calls, within)

        assert await trio.to_thread.run_sync(wait), f"no fsync beyond {calls} in {within} s"


async def test_append_and_reopen(jdir: str) -> None:
    async with open_journal(jdir) as journal:
        client_id = journal.client_id
        assert client_id.startswith("c-")
        assert journal.next_seq == 1
        await append_n(journal, 3)
        await journal.append_many([(4, frame(4)), (5, frame(5))])
        assert journal.last_seq == 5
    async with open_journal(jdir) as journal:
        assert journal.client_id == client_id  # stable for the life of the journal
        assert journal.recovered == [JournalEntry(s, frame(s)) for s in range(1, 6)]
        assert journal.next_seq == 6


async def test_seqs_must_be_consecutive(jdir: str) -> None:
    async with open_journal(jdir) as journal:
        with pytest.raises(ValueError, match="seq 2 where 1 is next"):
            await journal.append(2, b"x")
        with pytest.raises(ValueError):
            await journal.append_many([(1, b"a"), (3, b"c")])
        assert journal.last_seq == 0
        await journal.append(1, b"a")
        with pytest.raises(ValueError):
            await journal.ack(2)  # beyond what was appended


async def test_concurrent_appends_share_fsyncs(jdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_journal(jdir) as journal:
        fsyncs = FsyncCounter(monkeypatch)
        returned: list[int] = []

        async def one() -> None:
            seq = journal.next_seq
            await journal.append(seq, frame(seq))
            returned.append(seq)

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(one)
        assert sorted(returned) == list(range(1, 101))
        # Group commit: 100 appends, far fewer fsyncs (the first goes alone, the rest pile up).
        assert 1 <= fsyncs.calls <= 10
    appends = [r for r in recover(jdir).records if isinstance(r, Append)]
    assert [a.seq for a in appends] == list(range(1, 101))
    assert all(a.data == frame(a.seq) for a in appends)


@pytest.mark.parametrize(
    ("mode", "fsync_on_append"),
    [(Durability.ALWAYS, True), (Durability.BATCH, False), (Durability.OS, False)],
)
async def test_modes_write_and_fsync_as_documented(
    jdir: str, monkeypatch: pytest.MonkeyPatch, mode: Durability, fsync_on_append: bool
) -> None:
    async with open_journal(jdir, durability=mode, batch_interval=3600) as journal:
        fsyncs = FsyncCounter(monkeypatch)
        await append_n(journal, 3)
        assert (fsyncs.calls > 0) == fsync_on_append
        # The data is in the file (the OS has it) when append returns, whatever the mode.
        assert [r.seq for r in recover(jdir, repair=False).pending] == [1, 2, 3]
        before_close = fsyncs.calls
    # Closing fsyncs what is unsynced, except under "os", which never fsyncs.
    assert (fsyncs.calls > before_close) == (mode is Durability.BATCH)


async def test_batch_mode_fsyncs_by_itself_and_only_when_dirty(
    jdir: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # Virtual time: the flusher's timer runs instantly. (Virtual time also races ahead while a
    # write runs in its worker thread, so this checks what happens, not how many seconds it takes.)
    async with open_journal(jdir, durability="batch", batch_interval=0.25) as journal:
        fsyncs = FsyncCounter(monkeypatch)
        await append_n(journal, 2)
        await fsyncs.wait_beyond(0)  # nobody calls flush(): the flusher must fsync by itself
        await journal.flush()  # settle: everything written is now synced
        synced = fsyncs.calls
        await trio.sleep(40 * 0.25)  # forty idle intervals: nothing new to sync, no fsync
        assert fsyncs.calls == synced
        await append_n(journal, 1)
        await fsyncs.wait_beyond(synced)


async def test_flush_fsyncs_now(jdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_journal(jdir, durability="os") as journal:
        fsyncs = FsyncCounter(monkeypatch)
        await append_n(journal, 2)
        assert fsyncs.calls == 0
        await journal.flush()
        assert fsyncs.calls == 1


async def test_memory_mode_touches_no_files(tmp_path: Any) -> None:
    async with open_journal(None, durability="memory") as journal:
        await append_n(journal, 3)
        await journal.ack(2)
        await journal.set_cursor("c", 1, "e")
        assert journal.last_seq == 3
        assert journal.cursors["c"].offset == 1
        assert journal.recovered == []
    async with open_journal(None, durability="memory") as other:
        assert other.client_id != journal.client_id
    assert list(tmp_path.iterdir()) == []


async def test_ack_compacts_fully_acked_segments_and_keeps_seq(jdir: str) -> None:
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await append_n(journal, 300)
        initial = len(segments(jdir))
        assert initial >= 5
        await journal.ack(150)
        await journal.flush()  # an ack is written (and compacts) with the next batch
        assert 1 < len(segments(jdir)) < initial
        await journal.ack(300)
        await journal.flush()
        assert len(segments(jdir)) == 1
        total = sum(os.path.getsize(os.path.join(jdir, s)) for s in segments(jdir))
        assert total <= 4096
    # Everything was acked and compacted, but seq numbering must never restart: a reused seq would
    # be taken for a duplicate by the server and silently dropped.
    async with open_journal(jdir, segment_bytes=4096) as journal:
        assert journal.recovered == []
        assert journal.ack_seq == 300
        assert journal.next_seq == 301


async def test_cursors_survive_restarts_and_compaction(jdir: str) -> None:
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await journal.set_cursor("room:1", 5, "e1")
        await journal.set_cursor("room:2", 9, None)
        await journal.set_cursor("room:1", 6, "e1")
        await append_n(journal, 200)  # rolls segments
        await journal.remove_cursor("room:2")
        await journal.ack(200)  # deletes the segments holding the cursor records
    async with open_journal(jdir) as journal:
        assert dict(journal.cursors) == {"room:1": type(journal.cursors["room:1"])(6, "e1")}


async def test_second_open_in_the_same_process_is_locked(jdir: str) -> None:
    async with open_journal(jdir):
        with pytest.raises(JournalLocked) as info:
            async with open_journal(jdir):
                pass  # pragma: no cover
        assert info.value.pid == os.getpid()
    async with open_journal(jdir):
        pass  # released on close


async def test_use_after_close(jdir: str) -> None:
    async with open_journal(jdir) as journal:
        pass
    with pytest.raises(JournalClosed):
        await journal.append(1, b"x")
    assert issubclass(JournalClosed, RealtimeClosedError)


@pytest.mark.parametrize("failing", ["fsync", "write"])
@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
async def test_failed_write_or_fsync_fails_the_journal_closed(
    jdir: str, monkeypatch: pytest.MonkeyPatch, failing: str, code: int
) -> None:
    async with open_journal(jdir) as journal:
        await append_n(journal, 2)
        real = getattr(os, failing)

        def broken(*args: Any) -> Any:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, failing, broken)
        with pytest.raises(JournalBroken) as info:
            await journal.append(3, frame(3))
        assert info.value.errno == code
        assert isinstance(info.value, RealtimeBrokenError)
        assert journal.broken is info.value
        # The disk "recovers", but the journal stays failed: data whose fsync failed is not safe.
        monkeypatch.setattr(os, failing, real)
        with pytest.raises(JournalBroken):
            await journal.append(journal.next_seq, b"x")
        with pytest.raises(JournalBroken):
            await journal.ack(1)
    # What returned before the failure is still there.
    assert [r.seq for r in recover(jdir).pending][:2] == [1, 2]


async def test_concurrent_appenders_all_see_the_failure(
    jdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_journal(jdir) as journal:
        fsyncs = FsyncCounter(monkeypatch)
        fsyncs.fail_with = errno.EIO
        outcomes: list[str] = []

        async def one() -> None:
            seq = journal.next_seq
            try:
                await journal.append(seq, frame(seq))
                outcomes.append("ok")
            except JournalBroken:
                outcomes.append("broken")

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        assert outcomes == ["broken"] * 20


async def test_a_failed_fsync_taints_later_batches_even_if_their_fsync_succeeds(
    jdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsyncs overlap. Make the first fail only once the second has started (and will succeed):
    # after a failure the kernel may have dropped dirty pages, so the later success proves nothing
    # and the later batch must fail too.
    real_fsync = os.fsync
    counter = itertools.count(1)
    first_started = threading.Event()
    second_started = threading.Event()

    def fsync(fd: int) -> None:
        if next(counter) == 1:
            first_started.set()
            assert second_started.wait(10), "the second fsync never started"
            raise OSError(errno.EIO, "injected")
        second_started.set()
        real_fsync(fd)

    async with open_journal(jdir) as journal:
        monkeypatch.setattr(os, "fsync", fsync)
        outcomes: list[str] = []

        async def one(seq: int) -> None:
            try:
                await journal.append(seq, frame(seq))
                outcomes.append("ok")
            except JournalBroken:
                outcomes.append("broken")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 1)
            # Wait (in a thread: it is a threading.Event) until batch 1 is inside its fsync.
            assert await trio.to_thread.run_sync(first_started.wait, 10)
            nursery.start_soon(one, 2)
        assert outcomes == ["broken", "broken"]


async def test_cancelled_appends_are_never_half_done(jdir: str) -> None:
    # Cancel appenders at many points: every append that was called is either complete in the
    # journal, or raised; and the journal stays consistent (seqs contiguous).
    async with open_journal(jdir) as journal:
        for round_ in range(30):
            returned: list[int] = []

            async def one(returned: list[int] = returned) -> None:
                seq = journal.next_seq
                await journal.append(seq, frame(seq))
                returned.append(seq)

            with trio.move_on_after(0.0005 * round_) as scope:
                async with trio.open_nursery() as nursery:
                    for _ in range(10):
                        nursery.start_soon(one)
            # Cancellation waits for durability instead of interrupting it: all 10 returned.
            del scope
            assert len(returned) == 10
    appends = [r.seq for r in recover(jdir).pending]
    assert appends == list(range(1, 301))


async def test_invalid_options() -> None:
    with pytest.raises(ConfigError, match="durability"):
        async with open_journal("x", durability="sometimes"):
            pass  # pragma: no cover
    with pytest.raises(ConfigError, match="segment_bytes"):
        async with open_journal("x", segment_bytes=10):
            pass  # pragma: no cover
    with pytest.raises(ConfigError, match="directory"):
        async with open_journal(None):
            pass  # pragma: no cover


async def test_acks_and_cursors_do_not_wait_behind_a_running_fsync(
    jdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer moves its cursor once per message, and the reader records each ack: neither
    waits for the fsync of a concurrent append (it held a consumer to ~800 messages/s)."""
    async with open_journal(jdir) as journal, trio.open_nursery() as nursery:
        done = trio.Event()

        async def move_and_ack() -> None:
            for offset in range(1, 101):
                await journal.set_cursor("room:1", offset, "e1")
            await journal.ack(1)
            done.set()

        with held_fsyncs(monkeypatch):
            nursery.start_soon(journal.append, 1, frame(1))  # its fsync is held
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(move_and_ack)
            with trio.fail_after(5):
                await done.wait()
    state = recover(jdir)
    assert state.ack_seq == 1
    assert state.cursors == {"room:1": (100, "e1")}


async def test_cursor_moves_are_written_together(jdir: str) -> None:
    async with open_journal(jdir) as journal:
        for offset in range(1, 101):
            await journal.set_cursor("room:1", offset, "e1")
        await journal.set_cursor("room:2", 1, None, wait=True)
        written = [r for r in recover(jdir, repair=False).records if isinstance(r, CursorMark)]
        assert written[-1] == CursorMark("room:2", 1, None)  # wait: written when it returns
        assert CursorMark("room:1", 100, "e1") in written
        assert len(written) < 20  # not one write per move


@pytest.mark.parametrize("durability", ["memory", "always"])
async def test_an_append_in_a_cancelled_scope_completes_in_every_mode(
    tmp_path: Any, durability: str
) -> None:
    """Cancellation waits until an append is done, whatever the mode: in memory the seq used to be
    taken and Cancelled raised, so the next append skipped it."""
    directory = None if durability == "memory" else os.fspath(tmp_path)
    async with open_journal(directory, durability=durability) as journal:
        with trio.CancelScope() as scope:
            scope.cancel()
            await journal.append(1, frame(1))
            await journal.append_many([(2, frame(2))])
        assert not scope.cancelled_caught
        assert journal.last_seq == journal.durable_seq == 2


async def test_a_lone_cursor_move_is_written_within_mark_delay(
    jdir: str, mock_clock: trio.testing.MockClock
) -> None:
    """With nothing else to write, a cursor move waits MARK_DELAY for others, then is written."""

    def written() -> list[CursorMark]:
        return [r for r in recover(jdir, repair=False).records if isinstance(r, CursorMark)]

    async with open_journal(jdir) as journal:
        await journal.set_cursor("room:1", 5, "e1")
        await trio.testing.wait_all_tasks_blocked()
        assert written() == []  # gathering more
        mock_clock.jump(MARK_DELAY)
        await trio.testing.wait_all_tasks_blocked()
        assert written() == [CursorMark("room:1", 5, "e1")]


async def test_withdrawals_survive_restarts_rollovers_and_compaction(jdir: str) -> None:
    # A withdrawal must outlive the segment it was written in: a lazy recovery leaves sealed
    # segments unread, and compaction deletes them. Pending ones are written again after each
    # new segment's checkpoint, so the newest segment holds them all.
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await append_n(journal, 10)
        await journal.withdraw([(3, 4), (9, 9)], 2)
        await journal.withdraw([(6, 6)], 1)
        with pytest.raises(ValueError, match="outside the pending seqs"):
            await journal.withdraw([(11, 11)], 1)
        await append_n(journal, 300)  # rolls over many times
        assert len(segments(jdir)) >= 5
        await journal.ack(5)
        await journal.flush()
    async with open_journal(jdir, segment_bytes=4096) as journal:
        assert journal.recovered.low == 6  # sealed segments left unread
        assert [(w.first, w.last, w.reason) for w in journal.withdrawals] == [(6, 6, 1), (9, 9, 2)]
        assert journal.withdrawals.reason(9) == 2
        assert journal.withdrawals.reason(8) is None
        assert journal.withdrawals.reason(4) is None  # acknowledged: forgotten
        await journal.withdraw([(100, 299)], 3)
        await journal.ack(150)  # deletes the segments that held the first records
        await journal.flush()
    async with open_journal(jdir, segment_bytes=4096) as journal:
        ranges = [(w.first, w.last, w.reason) for w in journal.withdrawals]
        assert ranges == [(151, 299, 3)]
        assert [(w.first, w.last) for w in journal.withdrawals.within(200, 210)] == [(200, 209)]


async def test_a_withdrawal_is_on_disk_when_it_returns(jdir: str) -> None:
    # Under "always" the record is fsynced before withdraw() returns: what a crash at that point
    # leaves on disk already says the events are withdrawn (read back without the journal).
    async with open_journal(jdir) as journal:
        await append_n(journal, 3)
        await journal.withdraw([(2, 3)], 3)
        assert [(w.first, w.last) for w in recover(jdir, repair=False).withdrawn] == [(2, 3)]


async def test_withdrawals_outlive_a_second_process_that_rolls_segments(jdir: str) -> None:
    # Process 2 recovers a withdrawal and rolls past the segment that holds it: it must write it
    # again, or process 3 (whose lazy recovery leaves sealed segments unread) never sees it.
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await append_n(journal, 3)
        await journal.withdraw([(1, 3)], 3)
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await append_n(journal, 300)
        assert len(segments(jdir)) >= 3
    async with open_journal(jdir, segment_bytes=4096) as journal:
        assert [(w.first, w.last) for w in journal.withdrawals] == [(1, 3)]


async def test_adjacent_withdrawals_are_one_range(jdir: str) -> None:
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await append_n(journal, 50)
        for seq in range(1, 41):  # one at a time, as drop_oldest does
            await journal.withdraw([(seq, seq)], 2)
        await journal.withdraw([(45, 45)], 2)
        assert [(w.first, w.last) for w in journal.withdrawals] == [(1, 40), (45, 45)]
    assert [(w.first, w.last) for w in recover(jdir).withdrawn] == [(1, 40), (45, 45)]
