"""Rebasing a journal that lost its tail: the server holds seqs the journal no longer has, and the
events journaled since are renumbered after them, durably and atomically."""

from __future__ import annotations

import os
import shutil

import pytest

from trio_realtime._journal import Append, open_journal, recover

from .helpers import append_n, frame, segments


async def _rebased(
    jdir: str, *, count: int, acked: int, server: int, segment_bytes: int
) -> list[str]:
    """A journal of ``count`` appends, ``acked`` of them acknowledged, rebased to ``server``:
    everything after ``acked`` is renumbered from ``server + 1``. Returns the segments before."""
    async with open_journal(jdir, segment_bytes=segment_bytes) as journal:
        await append_n(journal, count)
        await journal.ack(acked)
        await journal.set_cursor("room:1", 7, "e1")
        before = segments(jdir)
        moved = [frame(seq) for seq in range(server + 1, server + 1 + count - acked)]
        await journal.rebase(server, moved)
        assert (journal.ack_seq, journal.last_seq) == (server, server + count - acked)
        assert journal.durable_seq == journal.last_seq
        await append_n(journal, 2)  # appends go on after the renumbered ones
    return before


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("segment_bytes", [1 << 20, 4096], ids=["one-segment", "many-segments"])
async def test_a_rebase_renumbers_the_pending_appends_durably(
    jdir: str, lazy: bool, segment_bytes: int
) -> None:
    before = await _rebased(jdir, count=300, acked=200, server=250, segment_bytes=segment_bytes)
    # The segments before the rebase are deleted: they held acknowledged or voided appends.
    assert not set(before) & set(segments(jdir))
    state = recover(jdir, lazy=lazy)
    assert (state.ack_seq, state.last_seq) == (250, 352)
    assert state.pending == [Append(seq, frame(seq)) for seq in range(251, 353)]
    assert state.cursors == {"room:1": (7, "e1")}
    async with open_journal(jdir) as journal:
        assert journal.next_seq == 353
        assert list(journal.recovered) == state.pending


async def test_a_rebase_with_nothing_pending_moves_the_next_seq_past_the_server(jdir: str) -> None:
    async with open_journal(jdir) as journal:
        await append_n(journal, 3)
        await journal.rebase(10, [])
        assert journal.next_seq == 11
    state = recover(jdir)
    assert (state.ack_seq, state.last_seq, state.pending) == (10, 10, [])


async def test_a_crash_before_the_old_segments_are_deleted_still_voids_them(jdir: str) -> None:
    """The rename of the rebased segment is the commit: old segments left beside it (a crash
    between the rename and their deletion) hold nothing pending any more."""
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await append_n(journal, 300)
        await journal.ack(200)
    kept = jdir + ".before"
    shutil.copytree(jdir, kept)
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await journal.rebase(250, [frame(seq) for seq in range(251, 351)])
    (rebased,) = segments(jdir)
    for name in segments(kept):
        if name != rebased:
            shutil.copy(os.path.join(kept, name), os.path.join(jdir, name))
    assert len(segments(jdir)) > 3
    for lazy in (False, True):
        state = recover(jdir, lazy=lazy)
        assert (state.ack_seq, state.last_seq) == (250, 350)
        assert state.pending == [Append(seq, frame(seq)) for seq in range(251, 351)]
    async with open_journal(jdir, segment_bytes=4096) as journal:
        assert journal.next_seq == 351
        await append_n(journal, 1)
        await journal.ack(351)  # everything acknowledged: the old segments go too
    assert len(segments(jdir)) <= 2


async def test_a_crash_before_the_rename_leaves_the_journal_as_it_was(jdir: str) -> None:
    async with open_journal(jdir) as journal:
        await append_n(journal, 5)
    staged = os.path.join(jdir, "segment-000000000002.log.staged")
    with open(staged, "wb") as f:
        f.write(b"half a rebased segment")
    state = recover(jdir)
    assert (state.ack_seq, state.last_seq) == (0, 5)
    assert [a.seq for a in state.pending] == [1, 2, 3, 4, 5]
    assert not os.path.exists(staged)


async def test_a_rebase_below_the_ack_watermark_is_refused(jdir: str) -> None:
    async with open_journal(jdir) as journal:
        await append_n(journal, 5)
        await journal.ack(4)
        with pytest.raises(ValueError, match="below the ack watermark"):
            await journal.rebase(3, [])


async def test_a_memory_journal_rebases_in_memory() -> None:
    async with open_journal(None, durability="memory") as journal:
        await append_n(journal, 3)
        await journal.rebase(5, [frame(6)])
        assert (journal.ack_seq, journal.last_seq, journal.durable_seq) == (5, 6, 6)
        await append_n(journal, 1)
        assert journal.last_seq == 7
