"""The delivery strategies and the outbox's withdrawals against the reference server, checked
against what the server stored and what crossed the wire: a dropped link, a server restart,
time to live, drop_oldest under a stalled server, a discard racing the server, batching."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

from trio_realtime import (
    Acked,
    Message,
    RealtimeConfig,
    Receipt,
    Unknown,
    Withdrawn,
    WithdrawReason,
    open_realtime,
)
from trio_realtime.server import MemoryStore, Store
from trio_realtime.testing import MEMORY_URL, MemoryServer, open_memory_server
from trio_realtime.transports import LinkClosed, Transport

STRATEGIES = ["at_least_once", "best_effort_ordered", "at_most_once"]

CONFIG = RealtimeConfig(
    durability="memory",
    initial_retry_delay=0.05,
    max_retry_delay=0.5,
    jitter=0.0,
    network_monitor=False,
    close_grace_period=0,
)


@attrs.define
class Wire:
    """A connector to whichever memory server runs now (refused while none does), recording
    every frame the client sends, with the time; it can cut the link right after the client
    sends a given seq, and hold what the server sends back."""

    server: MemoryServer | None = None
    sent: list[tuple[float, dict[str, Any]]] = attrs.Factory(list)
    messages: list[tuple[float, list[int]]] = attrs.Factory(list)
    """Per message the client sent: its time and the seqs of the events and skips in it."""
    cut_after: int | None = None
    hold: trio.Event | None = None
    """While set to an unset event, what the server sends waits (acks included)."""
    stall: trio.Event | None = None
    """While set to an unset event, what the client sends waits (the server reads nothing)."""
    links: int = 0

    def connector(self):  # type: ignore[no-untyped-def]
        async def connect(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
            if self.server is None:
                await trio.lowlevel.checkpoint()
                raise LinkClosed(None, "connection refused")
            self.links += 1
            inner = await self.server.connector()(nursery, url, connect_timeout)
            return _Recorded(inner, self)

        return connect

    def seqs(self, kind: str) -> list[int]:
        """The seqs of every frame of ``kind`` ("event" or "skip") the client sent, in order."""
        return [frame["seq"] for _, frame in self.sent if frame.get("type") == kind]


@attrs.define
class _Recorded:
    inner: Transport
    wire: Wire

    async def send(self, data: bytes | str) -> None:
        if self.wire.stall is not None:
            await self.wire.stall.wait()
        decoded = orjson.loads(data)
        frames = decoded if isinstance(decoded, list) else [decoded]
        now = trio.current_time()
        self.wire.sent.extend((now, frame) for frame in frames)
        seqs = [f["seq"] for f in frames if f.get("type") in ("event", "skip")]
        if seqs:
            self.wire.messages.append((now, seqs))
        await self.inner.send(data)
        cut = self.wire.cut_after
        if cut is not None and cut in seqs:
            self.wire.cut_after = None
            await self.inner.abort()

    async def receive(self) -> bytes | str:
        data = await self.inner.receive()
        if self.wire.hold is not None:
            await self.wire.hold.wait()
        return data

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)

    async def abort(self) -> None:
        await self.inner.abort()


@asynccontextmanager
async def serving(wire: Wire, store: Store) -> AsyncIterator[MemoryServer]:
    async with open_memory_server(store=store) as server:
        wire.server = server
        try:
            yield server
        finally:
            wire.server = None
            await server.server.drop_connections()


def client(wire: Wire, **config: Any):  # type: ignore[no-untyped-def]
    return open_realtime(
        MEMORY_URL,
        token="alice",
        connector=wire.connector(),
        config=attrs.evolve(CONFIG, **config),
    )


async def stored(store: Store, channel: str = "room") -> list[Any]:
    return [m.payload for m in await store.read(channel, 0, 10_000)]


async def outcomes(receipts: Sequence[Receipt], within: float = 60) -> list[Any]:
    with trio.fail_after(within):
        return [await r.wait() for r in receipts]


def check_strategy(
    strategy: str, wire: Wire, receipts: list[Receipt], got: list[Any], kept: list[Any]
) -> None:
    """What each strategy promises, checked against the server's store and the wire."""
    payloads = list(range(len(receipts)))
    if strategy != "at_most_once":
        assert got == [Acked(r.seq, got[i].duplicate) for i, r in enumerate(receipts)]
        assert kept == payloads  # each once, in order
        return
    events = wire.seqs("event")
    assert len(events) == len(set(events)), "an at-most-once event was sent twice"
    assert all(isinstance(o, Acked | Unknown) for o in got)
    acked = [n for n, o in zip(payloads, got, strict=True) if isinstance(o, Acked)]
    assert set(acked) <= set(kept)
    assert kept == sorted(set(kept)), "stored twice or out of order"
    assert set(kept) <= {n for n, r in zip(payloads, receipts, strict=True) if r.seq in events}


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_dropped_link(strategy: str, autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    wire = Wire(cut_after=5)
    async with serving(wire, store), client(wire, delivery_strategy=strategy) as conn:
        receipts = [await conn.send("room", "n", n) for n in range(10)]
        got = await outcomes(receipts)
        kept = await stored(store)
    assert wire.links == 2
    check_strategy(strategy, wire, receipts, got, kept)
    if strategy == "at_most_once":
        assert Unknown(5) in got  # in flight when the link was cut
        assert 5 not in wire.seqs("event")[5:]  # and never sent again
    else:  # sent again on the next link, unless the resume said the server had it
        assert conn.metrics.failed_attempts >= 1


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_server_restart(strategy: str, autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()  # what the server keeps across its restart
    wire = Wire()
    async with client(wire, delivery_strategy=strategy) as conn:
        receipts: list[Receipt] = []
        async with serving(wire, store):
            await conn.wait_connected(10)
            for n in range(10):
                receipts.append(await conn.send("room", "n", n))
                await trio.sleep(0.01)
            flying = receipts[-3:]
        # Down: the server dropped its connections with events possibly in flight.
        for n in range(10, 15):  # sent while it is down: they wait, then go out once
            receipts.append(await conn.send("room", "n", n))
        await trio.sleep(2)
        async with serving(wire, store):
            got = await outcomes(receipts)
            kept = await stored(store)
    check_strategy(strategy, wire, receipts, got, kept)
    assert got[10:] == [Acked(r.seq) for r in receipts[10:]]
    if strategy == "at_most_once":
        assert all(
            o == Acked(r.seq) or o == Unknown(r.seq) for o, r in zip(got, receipts, strict=True)
        )
        assert {r.seq for r in flying} >= {o.seq for o in got if isinstance(o, Unknown)}


async def test_ttl_expires_offline_and_the_server_skips_the_seq(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    wire = Wire()
    async with client(wire, default_ttl=60) as conn:
        short = await conn.send("room", "n", "short-lived", ttl=5)
        kept_one = await conn.send("room", "n", "kept", ttl=3600)
        default = await conn.send("room", "n", "default ttl")
        assert await short.wait() == Withdrawn(1, WithdrawReason.EXPIRED)
        assert trio.current_time() == 5  # exactly at its time to live
        assert await default.wait() == Withdrawn(3, WithdrawReason.EXPIRED)
        assert trio.current_time() == 60
        assert conn.metrics.expired == 2
        async with serving(wire, store) as server:
            assert await outcomes([kept_one]) == [Acked(2)]
            await conn.drain()
            assert await stored(store) == ["kept"]
            # The server consumed every seq: its watermark is past the skips.
            rows = await server.server.store.load(clients=(conn.client_id,))
            assert rows.clients[conn.client_id].ack_seq == 3
    assert wire.seqs("skip") == [1, 3]
    assert wire.seqs("event") == [2]


async def test_drop_oldest_under_a_stalled_server(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    wire = Wire()
    async with (
        serving(wire, store),
        client(wire, max_outbox_messages=4, outbox_full="drop_oldest") as conn,
    ):
        await conn.wait_connected(10)
        wire.stall = trio.Event()  # the server reads nothing: the client's writer is stuck
        with trio.fail_after(1):  # no send waits for the stalled server
            receipts = [await conn.send("room", "n", n) for n in range(12)]
        assert conn._outbox is not None
        assert conn._outbox.live_count == 4
        # The oldest 8 were dropped: at once, but for those already on their way (taken by
        # the stuck writer), which may reach the server yet.
        early = [r.outcome for r in receipts[:8]]
        flying = early.count(None)
        assert 1 <= flying <= 2
        assert early[flying:] == [
            Withdrawn(r.seq, WithdrawReason.DROPPED) for r in receipts[flying:8]
        ]
        wire.stall.set()
        got = await outcomes(receipts)
        kept = await stored(store)
    assert all(isinstance(o, Acked | Withdrawn) for o in got)
    acked = [n for n, o in zip(range(12), got, strict=True) if isinstance(o, Acked)]
    assert kept == acked  # what was acked is stored, once, in order; nothing else
    assert acked == [*range(flying), 8, 9, 10, 11]  # those on their way reached it
    dropped = [o for o in got if isinstance(o, Withdrawn)]
    assert dropped
    assert all(o.reason is WithdrawReason.DROPPED for o in dropped)
    assert conn.metrics.dropped == len(dropped)


class WatchedStore(MemoryStore):
    """A memory store that says when it stored something."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    async def write(self, batch: Any) -> None:
        await super().write(batch)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_stored(self, count: int) -> None:
        with trio.fail_after(10):
            while len(await stored(self)) < count:
                await self._changed.wait()


async def test_a_discard_racing_a_stored_event_resolves_as_acked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = WatchedStore()
    wire = Wire()
    async with serving(wire, store), client(wire) as conn:
        await conn.wait_connected(10)
        wire.hold = trio.Event()  # the server's ack will not reach the client yet
        stored_first = await conn.send("room", "n", "stored before the discard")
        await store.wait_stored(1)
        assert await conn.discard_pending() == 1
        assert stored_first.outcome is None  # the server may have it: wait for its answer
        wire.hold.set()
        assert await outcomes([stored_first]) == [Acked(1)]
        # The same race across a dropped link: the resume's watermark answers.
        wire.cut_after = 2
        wire.hold = trio.Event()
        second = await conn.send("room", "n", "stored, ack lost")
        await store.wait_stored(2)
        assert await conn.discard_pending() == 1
        wire.hold.set()
        assert await outcomes([second]) == [Acked(2)]
        assert conn.metrics.discarded == 0
        assert await stored(store) == ["stored before the discard", "stored, ack lost"]


async def test_batch_interval_gathers_what_is_sent_meanwhile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    wire = Wire()
    async with serving(wire, store), client(wire, batch_interval=0.5) as conn:
        await conn.wait_connected(10)
        start = trio.current_time()
        await conn.send_many("room", "n", [1, 2, 3])
        await trio.sleep(0.2)
        await conn.send("room", "n", 4)
        await trio.sleep(0.8)
        last = await conn.send("room", "n", 5)
        assert await outcomes([last]) == [Acked(5)]
    assert [(t - start, seqs) for t, seqs in wire.messages] == [(0.5, [1, 2, 3, 4]), (1.5, [5])]


async def test_server_time_is_on_live_events_and_replays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    wire = Wire()
    async with serving(wire, store):
        async with client(wire) as conn:
            await conn.subscribe("room")
            before = int(time.time() * 1000)
            receipt = await conn.send("room", "n", "audited")
            await receipt.wait()
            after = int(time.time() * 1000)
            async with conn.messages() as messages:
                live = await messages.__anext__()
        assert isinstance(live, Message)
        assert live.server_time is not None
        assert before <= live.server_time <= after
        # A replay (a new client subscribing from the start) carries the same time.
        async with client(Wire(server=wire.server)) as late:
            await late.subscribe("room", from_offset=0)
            async with late.messages() as messages:
                replayed = await messages.__anext__()
        assert isinstance(replayed, Message)
        assert replayed.server_time == live.server_time
        (row,) = await store.read("room", 0, 10)
        assert row.server_time == live.server_time
