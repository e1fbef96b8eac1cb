"""The outbox between send() and the server's acks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from trio_realtime import JournalCorrupt, LocalProtocolError, OutboxFull, RealtimeClosedError
from trio_realtime._config import OutboxFullPolicy
from trio_realtime._journal import open_journal
from trio_realtime._outbox import EVENT_OVERHEAD, Acked, Outbox, Receipt, Rejected

from ..helpers import held_fsyncs


def make(journal: object, **kw: object) -> Outbox:
    options: dict[str, object] = {
        "max_messages": 1000,
        "max_bytes": 1 << 20,
        "full_policy": OutboxFullPolicy.BLOCK,
    }
    options.update(kw)
    return Outbox(journal, **options)  # type: ignore[arg-type]


async def test_send_journals_the_wire_bytes_and_acks_resolve(tmp_path: Path) -> None:
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        receipt = await outbox.send("room:1", "chat", {"text": "hi"})
        assert receipt.seq == 1
        assert receipt.idempotency_key == f"{journal.client_id}:1"
        keyed = await outbox.send("room:1", "order", {"n": 1}, idempotency_key="order-42")
        assert keyed.idempotency_key == "order-42"
        batch = outbox.ready(100, 1 << 20)
        assert [seq for seq, _ in batch] == [1, 2]
        frame = orjson.loads(batch[0][1])
        assert frame["payload"] == {"text": "hi"}
        assert frame["seq"] == 1
        assert outbox.ready(100, 1 << 20) == []  # already taken
        assert outbox.pending_count == 2
        assert await outbox.ack(2, [2]) == 2
        assert await receipt.wait() == Acked(1, False)
        assert await keyed.wait() == Acked(2, True)
        assert outbox.pending_count == 0
    # the journal holds the exact bytes sent
    async with open_journal(os.fspath(tmp_path)) as journal:
        assert journal.recovered == []  # acked


async def test_unacked_events_come_back_after_restart(tmp_path: Path) -> None:
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        await outbox.send_many("c", "e", [1, 2, 3])
        sent = outbox.ready(100, 1 << 20)
        await outbox.ack(1, [])
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        assert outbox.pending_count == 2
        await outbox.resume(1)
        assert outbox.ready(100, 1 << 20) == sent[1:]  # the same bytes, same seqs
        receipt = await outbox.send("c", "e", 4)
        assert receipt.seq == 4


async def test_resume_resends_from_the_first_event_the_server_lacks() -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal)
        await outbox.send_many("c", "e", list(range(5)))
        assert len(outbox.ready(100, 1 << 20)) == 5
        await outbox.resume(3)  # new link: the server has 1..3
        assert [s for s, _ in outbox.ready(100, 1 << 20)] == [4, 5]


async def test_ready_respects_limits_and_order() -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal)
        await outbox.send_many("c", "e", ["x" * 100] * 10)
        first = outbox.ready(3, 1 << 20)
        assert [s for s, _ in first] == [1, 2, 3]
        small = outbox.ready(100, 10)  # too small for even one: still one
        assert [s for s, _ in small] == [4]
        rest = outbox.ready(100, 1 << 20)
        assert [s for s, _ in rest] == [5, 6, 7, 8, 9, 10]


async def test_concurrent_sends_are_sent_in_seq_order(tmp_path: Path) -> None:
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        taken: list[int] = []

        async def writer() -> None:
            while len(taken) < 200:
                await outbox.wait_ready()
                taken.extend(seq for seq, _ in outbox.ready(7, 1 << 20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            for i in range(200):
                nursery.start_soon(outbox.send, "c", "e", i)
        assert taken == list(range(1, 201))


async def test_rejection_and_later_cumulative_ack() -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal)
        a, b, c = await outbox.send_many("c", "e", [1, 2, 3])
        outbox.reject(2, "forbidden", "no")
        await outbox.ack(3, [])
        assert await a.wait() == Acked(1)
        assert await b.wait() == Rejected(2, "forbidden", "no")
        assert await c.wait() == Acked(3)
        assert (outbox.acked_total, outbox.rejected_total) == (2, 1)


async def test_bad_input_reserves_nothing() -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal)
        with pytest.raises(LocalProtocolError):
            await outbox.send("c", "e", {"not json": {1, 2}})
        for channel, event in (("", "e"), ("c", ""), (3, "e")):
            with pytest.raises(ValueError):
                await outbox.send(channel, event, None)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await outbox.send("c", "e", None, idempotency_key="")
        assert (await outbox.send("c", "e", 1)).seq == 1


async def test_outbox_full_raise_and_block() -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal, max_messages=2, full_policy=OutboxFullPolicy.RAISE)
        await outbox.send_many("c", "e", [1, 2])
        with pytest.raises(OutboxFull) as info:
            await outbox.send("c", "e", 3)
        assert info.value.pending == 2

    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal, max_messages=2)
        await outbox.send_many("c", "e", [1, 2])
        done = trio.Event()

        async def third() -> None:
            await outbox.send("c", "e", 3)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # blocked: the outbox is full
            await outbox.ack(1, [])
            await done.wait()
        assert outbox.pending_count == 2


async def test_recovered_backlog_is_sent_in_batches_then_new_events(tmp_path: Path) -> None:
    """Events recovered from the journal are kept as the journal read them (no object per
    event); the writer takes them in order, bounded by bytes, then what was sent since."""
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        await outbox.send_many("c", "e", list(range(1, 21)))
        await outbox.ack(2, [])
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        outcomes: list[object] = []
        outbox.on_outcome = outcomes.append
        assert outbox.pending_count == 18
        backlog_bytes = outbox.pending_bytes
        # What the outbox holds: the frames plus the bookkeeping each event costs.
        assert backlog_bytes == sum(len(e.data) + EVENT_OVERHEAD for e in journal.recovered)
        new = await outbox.send("c", "e", 21)
        assert new.seq == 21
        one = len(journal.recovered[0].data) + 1
        taken: list[int] = []
        while batch := outbox.ready(100, 3 * one):  # at most 3 per batch
            assert len(batch) <= 3
            taken += [seq for seq, _ in batch]
        assert taken == list(range(3, 22))  # backlog, then the new event, nothing twice
        assert outbox.replayed_total == 18
        outbox.reject(5, "forbidden", "no")
        assert await outbox.ack(10, [4]) == 8
        assert outcomes == [
            Rejected(5, "forbidden", "no"),
            Acked(3, False),
            Acked(4, True),
            *(Acked(seq, False) for seq in range(6, 11)),
        ]
        assert outbox.pending_count == 11
        # After a reconnect the writer starts again at the first event the server lacks.
        await outbox.resume(12)
        assert [seq for seq, _ in outbox.ready(100, 1 << 20)] == [*range(13, 22)]
        await outbox.ack(21, [])
        assert outbox.pending_count == 0
        assert outbox.pending_bytes == 0
        assert await new.wait() == Acked(21, False)


async def test_memory_held_per_event_is_what_max_outbox_bytes_counts() -> None:
    """An unacknowledged event holds its frame plus EVENT_OVERHEAD bytes at most (orjson's
    output buffer is 4 KiB whatever the frame's size: the outbox must keep a trimmed copy)."""
    import gc
    import tracemalloc

    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal, max_messages=100_000, max_bytes=1 << 30)
        await outbox.send("c", "e", "warm-up")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            receipts = await outbox.send_many("c", "e", ["x" * 200] * 5000)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        del receipts  # the caller's list of receipts is not the outbox's memory
        frames = [data for _, data in outbox.ready(10_000, 1 << 30)]
        assert len(frames) == 5001
        assert held / 5000 <= len(frames[1]) + EVENT_OVERHEAD
        assert outbox.pending_bytes == sum(len(data) + EVENT_OVERHEAD for data in frames)


async def test_recovered_events_in_sealed_segments_are_read_back_as_the_writer_needs_them(
    tmp_path: Path,
) -> None:
    """Opening leaves sealed segments on disk; the outbox reads one back when the writer reaches
    it (needs_load / load_backlog) and lets it go once its events are all acknowledged."""
    directory = os.fspath(tmp_path)
    async with open_journal(directory, segment_bytes=4096) as journal:
        outbox = make(journal)
        for _ in range(30):
            await outbox.send_many("c", "e", ["x" * 40] * 10)
        await outbox.ack(5, [])
    async with open_journal(directory, segment_bytes=4096) as journal:
        outbox = make(journal, max_bytes=1 << 30)
        assert outbox.pending_count == 295
        in_memory = outbox.pending_bytes
        taken: list[int] = []
        loads = 0
        while outbox.needs_load() or outbox.has_ready():
            if outbox.needs_load():
                await outbox.load_backlog()
                loads += 1
                continue
            taken += [seq for seq, _ in outbox.ready(1000, 1 << 20)]
        assert taken == list(range(6, 301))
        assert loads > 3  # one per sealed segment

        assert outbox.pending_bytes > in_memory  # what was read back is counted
    async with open_journal(directory, segment_bytes=4096) as journal:
        outbox = make(journal, max_bytes=1 << 30)
        again: list[int] = []  # wait_ready reads the segments back by itself
        while len(again) < 295:
            with trio.fail_after(5):
                await outbox.wait_ready()
            again += [seq for seq, _ in outbox.ready(1000, 1 << 20)]
        assert again == list(range(6, 301))
        await outbox.ack(300, [])
        assert (outbox.pending_count, outbox.pending_bytes) == (0, 0)


async def test_a_sealed_segment_damaged_after_opening_fails_the_read_back(tmp_path: Path) -> None:
    directory = os.fspath(tmp_path)
    async with open_journal(directory, segment_bytes=4096) as journal:
        outbox = make(journal)
        for _ in range(10):
            await outbox.send_many("c", "e", ["x" * 40] * 10)
    async with open_journal(directory, segment_bytes=4096) as journal:
        outbox = make(journal)
        first = min(name for name in os.listdir(directory) if name.startswith("segment-"))
        with open(os.path.join(directory, first), "r+b") as f:
            f.seek(200)
            byte = f.read(1)
            f.seek(200)
            f.write(bytes([byte[0] ^ 1]))
        assert outbox.needs_load()
        with pytest.raises(JournalCorrupt) as info:
            await outbox.load_backlog()
        assert info.value.segment == os.path.join(directory, first)
        assert outbox.pending_count == 100  # nothing was taken for sent or acknowledged


async def test_a_send_waiting_for_room_fails_when_the_outbox_closes(tmp_path: Path) -> None:
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal, max_messages=1)
        await outbox.send("c", "e", 1)
        failed = trio.Event()

        async def second() -> None:
            with pytest.raises(RealtimeClosedError):
                await outbox.send("c", "e", 2)
            failed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()
            assert not failed.is_set()  # waiting for room
            outbox.close()
            with trio.fail_after(5):
                await failed.wait()
        assert journal.last_seq == 1  # nothing of the second send was journaled


async def test_outcomes_are_made_when_asked_for_and_given_to_a_listener(tmp_path: Path) -> None:
    """With nobody listening, an ack leaves the receipt to build its Acked when asked; with a
    listener, the listener and the receipt see the same outcome."""
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        quiet = await outbox.send_many("c", "e", [1, 2])
        await outbox.ack(2, [2])
        assert [r.outcome for r in quiet] == [Acked(1, False), Acked(2, True)]
        assert "Acked(seq=2, duplicate=True)" in repr(quiet[1])
        assert await quiet[0].wait() == Acked(1, False)
        heard: list[object] = []
        outbox.on_outcome = heard.append
        loud = await outbox.send("c", "e", 3)
        await outbox.ack(3, [])
        assert heard == [Acked(3, False)]
        assert loud.outcome is heard[0]


async def test_a_server_ahead_of_the_journal_gets_the_new_events_renumbered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal lost its tail (seqs 4..5, stored by the server): the events journaled since
    then reused those seqs and would be dropped as retransmissions. They are renumbered after the
    server's watermark, keys and frames with them, in the order they were sent."""
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        await outbox.send_many("c", "e", [1, 2, 3])
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        outcomes: list[object] = []
        outbox.on_outcome = outcomes.append
        first = await outbox.send("c", "e", "first")  # journaled offline: seq 4
        keyed = await outbox.send("c", "e", "keyed", idempotency_key="mine")
        assert (first.seq, keyed.seq) == (4, 5)
        with caplog.at_level(logging.WARNING, logger="trio_realtime"):
            await outbox.resume(5)  # the server has 1..5, of which this journal had 1..3
        assert "holds seqs 4..5" in caplog.text
        assert "2 unacknowledged events renumbered from 6" in caplog.text
        assert outcomes == [Acked(1), Acked(2), Acked(3)]  # only what the server can have
        assert (first.seq, first.idempotency_key) == (6, f"{journal.client_id}:6")
        assert (keyed.seq, keyed.idempotency_key) == (7, "mine")
        sent = outbox.ready(100, 1 << 20)
        frames = [orjson.loads(data) for _, data in sent]
        assert [seq for seq, _ in sent] == [f["seq"] for f in frames] == [6, 7]
        assert [f["payload"] for f in frames] == ["first", "keyed"]
        assert [f["idempotency_key"] for f in frames] == [first.idempotency_key, "mine"]
        assert outbox.renumbered_total == 2
        assert (await outbox.send("c", "e", "after")).seq == 8
        await outbox.ack(6, [])
        assert await first.wait() == Acked(6)
    async with open_journal(os.fspath(tmp_path)) as journal:  # durably so
        assert [(a.seq, orjson.loads(a.data)["payload"]) for a in journal.recovered] == [
            (7, "keyed"),
            (8, "after"),
        ]


async def test_a_resume_within_what_was_sent_renumbers_nothing(tmp_path: Path) -> None:
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        await outbox.send_many("c", "e", [1, 2, 3])
        assert (
            len(outbox.ready(100, 1 << 20)) == 3
        )  # sent by this process: the server may have them
        await outbox.resume(3)
        assert outbox.renumbered_total == 0
        assert outbox.pending_count == 0
        assert (await outbox.send("c", "e", 4)).seq == 4


async def test_sends_wait_while_the_outbox_renumbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_journal(os.fspath(tmp_path)) as journal:
        await make(journal).send_many("c", "e", [1, 2])
    during: list[Receipt] = []
    async with open_journal(os.fspath(tmp_path)) as journal, trio.open_nursery() as nursery:
        outbox = make(journal)
        offline = await outbox.send("c", "e", "offline")  # seq 3, which the server has already

        async def send() -> None:
            during.append(await outbox.send("c", "e", "during"))

        with held_fsyncs(monkeypatch):
            nursery.start_soon(outbox.resume, 3)  # the rebase waits for its held fsync
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert (journal.last_seq, during) == (4, [])  # no seq taken while renumbering
    assert (offline.seq, during[0].seq) == (4, 5)
