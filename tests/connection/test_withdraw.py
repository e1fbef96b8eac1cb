"""Withdrawing queued events (time to live, drop_oldest, discard) and at-most-once, in the
outbox alone: what each receipt resolves to, what the writer sends in place of a withdrawn
event, and what the journal keeps across a restart."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from trio_realtime import Acked, Unknown, Withdrawn, WithdrawReason
from trio_realtime._config import OutboxFullPolicy
from trio_realtime._journal import open_journal
from trio_realtime._journal._backlog import BacklogPart
from trio_realtime._outbox import Outbox

from ..helpers import held_fsyncs
from .test_outbox import make

EXPIRED, DROPPED, DISCARDED = WithdrawReason


def sent(outbox: Outbox) -> list[tuple[int, str]]:
    """What the writer would send now: (seq, "skip" or the payload)."""
    out = []
    for seq, data in outbox.ready(1000, 1 << 30):
        frame = orjson.loads(data)
        assert frame["seq"] == seq
        out.append((seq, "skip" if frame["type"] == "skip" else frame["payload"]))
    return out


async def test_an_event_expires_at_its_ttl_and_goes_out_as_a_skip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal, default_ttl=30)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run_expiry)
            short = await outbox.send("c", "e", "short", ttl=5)
            default = await outbox.send("c", "e", "default")
            forever = await outbox.send("c", "e", "kept", ttl=math.inf)  # exempt from the default
            with pytest.raises(ValueError, match="ttl"):
                await outbox.send("c", "e", "x", ttl=0)
            assert await short.wait() == Withdrawn(1, EXPIRED)
            assert trio.current_time() == 5
            assert await default.wait() == Withdrawn(2, EXPIRED)
            assert trio.current_time() == 30
            assert forever.outcome is None
            assert outbox.live_count == 1
            assert outbox.pending_count == 3  # the skips still have to reach the server
            assert sent(outbox) == [(1, "skip"), (2, "skip"), (3, "kept")]
            await outbox.ack(3, [])
            assert await forever.wait() == Acked(3)
            assert outbox.withdrawn_totals[EXPIRED] == 2
            assert outbox.pending_count == 0
            assert outbox.pending_bytes == 0
            nursery.cancel_scope.cancel()


async def test_an_event_the_server_may_have_waits_for_the_answer() -> None:
    # Withdrawn after it went out: it resolves when an ack (it was stored: Acked) or the next
    # resume (the server lacks it: Withdrawn, and its skip goes out) says which.
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal)
        await outbox.resume(0)
        receipts = await outbox.send_many("c", "e", ["a", "b", "c"])
        assert sent(outbox) == [(1, "a"), (2, "b"), (3, "c")]
        late = await outbox.send("c", "e", "d")
        assert await outbox.discard() == 4
        assert await late.wait() == Withdrawn(4, DISCARDED)  # never went out: at once
        assert [r.outcome for r in receipts] == [None, None, None]
        await outbox.ack(1, [])
        assert receipts[0].outcome == Acked(1)  # the server had it
        outbox.link_lost()
        assert outbox.failed_attempts_total == 2
        await outbox.resume(2)  # the server stored 2 too; 3 never arrived
        assert receipts[1].outcome == Acked(2)
        assert receipts[2].outcome == Withdrawn(3, DISCARDED)
        assert sent(outbox) == [(3, "skip"), (4, "skip")]
        assert outbox.withdrawn_totals[DISCARDED] == 2
        assert outbox.acked_total == 2


async def test_discard_of_one_channel_keeps_the_others() -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal)
        a = await outbox.send("a", "e", 1)
        b = await outbox.send("b", "e", 2)
        assert await outbox.discard("a") == 1
        assert await outbox.discard("a") == 0
        assert a.outcome == Withdrawn(1, DISCARDED)
        assert b.outcome is None
        assert sent(outbox) == [(1, "skip"), (2, 2)]


async def test_drop_oldest_makes_room_without_blocking() -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal, max_messages=3, full_policy=OutboxFullPolicy.DROP_OLDEST)
        receipts = [await outbox.send("c", "e", n) for n in range(1, 7)]
        assert [r.outcome for r in receipts] == [
            Withdrawn(1, DROPPED),
            Withdrawn(2, DROPPED),
            Withdrawn(3, DROPPED),
            None,
            None,
            None,
        ]
        assert outbox.live_count == 3
        assert sent(outbox) == [(1, "skip"), (2, "skip"), (3, "skip"), (4, 4), (5, 5), (6, 6)]
        # The oldest are in flight now: dropping them waits for the server's answer, but
        # makes room at once.
        seventh = await outbox.send("c", "e", 7)
        assert receipts[3].outcome is None
        await outbox.ack(7, [])
        assert receipts[3].outcome == Acked(4)  # it had reached the server
        assert seventh.outcome == Acked(7)
        assert outbox.withdrawn_totals[DROPPED] == 3


async def test_at_most_once_never_sends_an_event_twice() -> None:
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal, at_most_once=True)
        offline = await outbox.send("c", "e", "queued while offline")
        await outbox.resume(0)
        flying = await outbox.send_many("c", "e", ["x", "y"])
        assert sent(outbox) == [(1, "queued while offline"), (2, "x"), (3, "y")]
        await outbox.ack(1, [])
        assert offline.outcome == Acked(1)
        outbox.link_lost()
        assert [r.outcome for r in flying] == [Unknown(2), Unknown(3)]
        assert outbox.unknown_total == 2
        await outbox.resume(2)  # x arrived, y did not: neither is sent again
        assert sent(outbox) == [(3, "skip")]
        after = await outbox.send("c", "e", "z")
        assert sent(outbox) == [(4, "z")]
        await outbox.ack(4, [])
        assert after.outcome == Acked(4)
        assert [r.outcome for r in flying] == [Unknown(2), Unknown(3)]


async def test_recovered_events_withdrawn_before_the_first_resume(tmp_path: Path) -> None:
    # A previous process may have sent them: the first resume says which the server has.
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        await outbox.send_many("a", "e", [1, 2, 3])
        await outbox.send_many("b", "e", [4, 5])
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        outcomes: list[object] = []
        outbox.on_outcome = outcomes.append
        assert await outbox.discard("a") == 3
        assert outbox.live_count == 2
        assert outcomes == []
        await outbox.resume(1)
        assert outcomes == [Acked(1), Withdrawn(2, DISCARDED), Withdrawn(3, DISCARDED)]
        assert sent(outbox) == [(2, "skip"), (3, "skip"), (4, 4), (5, 5)]
    # The withdrawal outlives the process: the next one still sends skips for 2 and 3.
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        await outbox.resume(1)
        assert sent(outbox) == [(2, "skip"), (3, "skip"), (4, 4), (5, 5)]
        assert await outbox.discard() == 2
        await outbox.resume(1)
        assert sent(outbox) == [(2, "skip"), (3, "skip"), (4, "skip"), (5, "skip")]
        assert outbox.live_count == 0
        await outbox.ack(5, [])
        assert outbox.pending_count == 0


async def test_drop_oldest_takes_recovered_events_first(tmp_path: Path) -> None:
    async with open_journal(os.fspath(tmp_path)) as journal:
        await make(journal).send_many("c", "e", [1, 2, 3])
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal, max_messages=3, full_policy=OutboxFullPolicy.DROP_OLDEST)
        await outbox.resume(0)
        new = await outbox.send_many("c", "e", [4, 5])
        assert [r.seq for r in new] == [4, 5]
        assert outbox.withdrawn_totals[DROPPED] == 2
        assert sent(outbox) == [(1, "skip"), (2, "skip"), (3, 3), (4, 4), (5, 5)]


async def test_after_a_resume_the_server_lacks_what_it_did_not_ack() -> None:
    # Sent on a link that dropped, not acknowledged by the resume: the server does not have it
    # (it finished the old link's commits before answering), so withdrawing it resolves at once.
    async with open_journal(None, durability="memory") as journal:
        outbox = make(journal)
        await outbox.resume(0)
        receipt = await outbox.send("c", "e", "x")
        assert sent(outbox) == [(1, "x")]
        outbox.link_lost()
        await outbox.resume(0)
        assert await outbox.discard() == 1
        assert receipt.outcome == Withdrawn(1, DISCARDED)


async def test_a_discard_and_a_renumbering_do_not_interleave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The discard's record is being written when a resume renumbers (the server is ahead of a
    # journal that lost its tail): the renumbering waits, the event stays withdrawn under its new
    # seq, and only its skip goes out, now and after a restart.
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        receipt = await outbox.send("c", "e", "secret")
        async with trio.open_nursery() as nursery:
            with held_fsyncs(monkeypatch):
                nursery.start_soon(outbox.discard)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(outbox.resume, 5)
                await trio.testing.wait_all_tasks_blocked()
        assert receipt.outcome == Withdrawn(receipt.seq, DISCARDED)
        assert receipt.seq == 6
        assert sent(outbox) == [(6, "skip")]
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        await outbox.resume(5)
        assert sent(outbox) == [(6, "skip")]


async def test_recovered_events_go_out_as_skips_only_once_the_withdrawal_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_journal(os.fspath(tmp_path)) as journal:
        await make(journal).send_many("c", "e", [1, 2, 3])
    async with open_journal(os.fspath(tmp_path)) as journal:
        outbox = make(journal)
        outcomes: list[object] = []
        outbox.on_outcome = outcomes.append
        await outbox.resume(0)
        async with trio.open_nursery() as nursery:
            with held_fsyncs(monkeypatch):
                nursery.start_soon(outbox.discard)
                await trio.testing.wait_all_tasks_blocked()
                # Not durable yet: the events themselves would go out (and count as sent).
                assert sent(outbox) == [(1, 1), (2, 2), (3, 3)]
        # Written: they were on their way, so the server's answer decides.
        assert outcomes == []
        await outbox.ack(2, [])
        assert outcomes == [Acked(1), Acked(2)]
        outbox.link_lost()
        await outbox.resume(2)
        assert outcomes[2:] == [Withdrawn(3, DISCARDED)]
        assert sent(outbox) == [(3, "skip")]


async def test_an_ack_while_a_channel_discard_reads_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_journal(os.fspath(tmp_path), segment_bytes=4096) as journal:
        outbox = make(journal)
        for n in range(60):
            await outbox.send("a" if n % 2 else "b", "e", "x" * 100)
    async with open_journal(os.fspath(tmp_path), segment_bytes=4096) as journal:
        outbox = make(journal)
        await outbox.resume(0)
        release = threading.Event()
        read = BacklogPart.read

        def slow_read(part: BacklogPart) -> Any:
            release.wait(10)
            return read(part)

        monkeypatch.setattr(BacklogPart, "read", slow_read)
        count: list[int] = []

        async def discard() -> None:
            count.append(await outbox.discard("a"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(discard)
            await trio.testing.wait_all_tasks_blocked()
            await outbox.ack(30, [])  # while the segment is being read
            release.set()
        assert count == [15]  # the 15 events of "a" still pending, not the acknowledged ones
        assert outbox.live_count == 15  # those of "b"
