"""Sealed segments: a segment that rolls over ends with a seal, and opening a journal checks a
sealed segment with that one CRC instead of reading its records, which are read back when needed."""

from __future__ import annotations

import os

import pytest

from trio_realtime import JournalCorrupt, JournalError
from trio_realtime._journal import Append, open_journal, recover
from trio_realtime._journal._backlog import Backlog, BacklogPart, Frames
from trio_realtime._journal._format import (
    HEADER,
    SEAL_RECORD_BYTES,
    Seal,
    scan,
    seal_length,
    sealed_frames,
)

from .helpers import append_n, frame, segments


async def _several_segments(directory: str, count: int = 300, acked: int = 0) -> list[str]:
    async with open_journal(directory, segment_bytes=4096) as journal:
        await append_n(journal, count)
        if acked:
            await journal.ack(acked)
    names = segments(directory)
    assert len(names) > 3
    return [os.path.join(directory, name) for name in names]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def test_every_segment_but_the_active_one_ends_with_a_matching_seal(jdir: str) -> None:
    *sealed, active = await _several_segments(jdir)
    for path in sealed:
        data = _read(path)
        last = scan(data).records[-1]
        assert isinstance(last, Seal)
        assert last.length == len(data) - SEAL_RECORD_BYTES
        assert seal_length(data) == last.length
    assert seal_length(_read(active)) is None
    # The full recovery still reads every record, seals included, and the same appends.
    state = recover(jdir)
    assert [r.seq for r in state.records if isinstance(r, Append)] == list(range(1, 301))


async def test_sealed_frames_are_the_appends_of_the_segment(jdir: str) -> None:
    first, *_ = await _several_segments(jdir)
    data = _read(first)
    seqs, starts, ends = sealed_frames(data) or ([], [], [])
    appends = [r for r in scan(data).records if isinstance(r, Append)]
    assert seqs == [a.seq for a in appends]
    assert [data[s:e] for s, e in zip(starts, ends, strict=True)] == [a.data for a in appends]
    damaged = bytearray(data)
    damaged[len(HEADER) + 20] ^= 1
    assert sealed_frames(bytes(damaged)) is None


async def test_opening_reads_only_the_active_segment_and_the_checkpoints(jdir: str) -> None:
    paths = await _several_segments(jdir, acked=40)
    lazy = recover(jdir, lazy=True)
    full = recover(jdir)
    assert (lazy.last_seq, lazy.ack_seq, lazy.cursors) == (
        full.last_seq,
        full.ack_seq,
        full.cursors,
    )
    assert [s.path for s in lazy.segments] == paths
    assert [s.max_seq for s in lazy.segments] == [s.max_seq for s in full.segments]
    # Records were read from the active segment only; the others wait on disk.
    assert {r.seq for r in lazy.records if isinstance(r, Append)} <= set(
        range(lazy.segments[-2].max_seq + 1, 301)
    )
    assert [p.path for p in lazy.sealed] == paths[:-1]
    backlog = lazy.backlog()
    assert (backlog.low, backlog.end) == (41, 301)
    assert backlog.loaded_count < 260  # the sealed parts are not in memory
    assert list(backlog) == full.pending
    async with open_journal(jdir, segment_bytes=4096) as journal:
        assert journal.recovered == full.pending


async def test_a_damaged_sealed_segment_refuses_to_open_and_says_where(jdir: str) -> None:
    paths = await _several_segments(jdir)
    target = paths[1]
    data = bytearray(_read(target))
    records_at = len(HEADER) + 4 + 4 + int.from_bytes(data[len(HEADER) : len(HEADER) + 4], "little")
    data[records_at + 30] ^= 0x10  # inside the first append after the checkpoint
    with open(target, "wb") as f:
        f.write(data)
    with pytest.raises(JournalCorrupt) as info:
        async with open_journal(jdir, segment_bytes=4096):
            pass  # pragma: no cover
    assert info.value.segment == target
    assert info.value.offset == records_at
    assert _read(target) == bytes(data)  # nothing was cut


async def test_a_sealed_segment_cut_short_refuses_to_open(jdir: str) -> None:
    paths = await _several_segments(jdir)
    with open(paths[0], "r+b") as f:
        f.truncate(os.path.getsize(paths[0]) - 3)
    with pytest.raises(JournalCorrupt) as info:
        async with open_journal(jdir, segment_bytes=4096):
            pass  # pragma: no cover
    assert info.value.segment == paths[0]


async def test_segments_without_a_seal_are_read_in_full(jdir: str) -> None:
    """Journals written before seals existed (or a seal lost otherwise) still open: their
    segments are read record by record, as before."""
    paths = await _several_segments(jdir)
    for path in paths[:-1]:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - SEAL_RECORD_BYTES)
    lazy = recover(jdir, lazy=True)
    assert lazy.sealed == []
    assert [a.seq for a in lazy.pending] == list(range(1, 301))


async def test_a_part_read_back_is_checked_against_its_seqs(jdir: str) -> None:
    paths = await _several_segments(jdir)
    state = recover(jdir, lazy=True)
    part = state.sealed[1]
    frames = part.read()
    assert [frames.frame(i) for i in range(len(frames))] == [
        frame(seq) for seq in range(part.first, part.end)
    ]
    wrong = BacklogPart(part.first + 1, part.end + 1, path=part.path)
    with pytest.raises(JournalCorrupt, match="expected seqs"):
        wrong.read()
    os.unlink(paths[1])
    with pytest.raises(JournalError, match="cannot read"):
        part.read()


def test_backlog_counts_what_is_in_memory_and_lets_go_of_acknowledged_parts() -> None:
    loaded = BacklogPart(1, 4, frames=Frames.of([b"a", b"bb", b"ccc"]))
    later = BacklogPart(4, 6, frames=Frames.of([b"dddd", b"eeeee"]))
    backlog = Backlog([loaded, later], low=2)
    assert (len(backlog), backlog.loaded_count, backlog.loaded_bytes) == (4, 4, 2 + 3 + 4 + 5)
    assert [a.seq for a in backlog] == [2, 3, 4, 5]
    assert backlog[0] == Append(2, b"bb")
    assert backlog[-1] == Append(5, b"eeeee")
    backlog.acknowledge(5)
    assert (backlog.low, backlog.loaded_count, backlog.loaded_bytes) == (5, 1, 5)
    assert backlog.get(5) == b"eeeee"
    backlog.acknowledge(6)
    assert (len(backlog), backlog.loaded_count, backlog.loaded_bytes) == (0, 0, 0)
    with pytest.raises(ValueError, match="consecutive"):
        Backlog([loaded, BacklogPart(5, 6, frames=Frames.of([b"x"]))], low=1)


async def test_sealed_segments_left_on_disk_are_deleted_once_acknowledged(jdir: str) -> None:
    paths = await _several_segments(jdir)
    async with open_journal(jdir, segment_bytes=4096) as journal:
        await journal.ack(150)
        await journal.flush()  # an ack is written (and compacts) with the next batch
        kept = [os.path.join(jdir, name) for name in segments(jdir)]
        assert kept[0] != paths[0]  # the oldest went ...
        assert kept[-1] == paths[-1]  # ... but not what holds seqs after 150
        await journal.ack(300)
        await journal.flush()
        assert segments(jdir) == [os.path.basename(paths[-1])]
