"""Metrics: counters, ack latency, reconnect time, replays; the live feeds metrics_updates() and
acks(). Exact under MockClock against the reference server in memory."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from trio_realtime import Acked, ConnectionState, RealtimeConfig, Rejected, open_realtime
from trio_realtime.server import MemoryStore, ServerConfig, WriteBatch
from trio_realtime.transports import LinkClosed

from .conftest import MEMORY, URL, memory_server, wait_state


class SlowStore(MemoryStore):
    """Every commit takes half a (virtual) second."""

    async def write(self, batch: WriteBatch) -> None:
        await trio.sleep(0.5)
        await super().write(batch)


async def test_counters_latency_and_the_live_feeds(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        memory_server(ServerConfig(max_frame_bytes=1000)) as ms,
        ms.client("a") as conn,
    ):
        ms.server.store = SlowStore()
        acks = conn.acks()
        updates = conn.metrics_updates(interval=2.0)
        t0 = trio.current_time()
        first = await updates.__anext__()
        assert trio.current_time() == t0
        assert first.total_messages_sent == 0
        assert first.ack_latency_p50 is None
        assert first.average_reconnect_time is None

        await conn.send("room", "n", 0)
        await conn.drain()
        assert conn.metrics.ack_latency_p50 == conn.metrics.ack_latency_p99 == 0.5  # the commit
        await conn.send_many("room", "n", list(range(1, 9)))
        await conn.send("room", "big", "x" * 2000)  # over max_frame_bytes: rejected alone
        await conn.drain()
        outcomes = [await acks.__anext__() for _ in range(10)]
        assert outcomes[:9] == [Acked(seq) for seq in range(1, 10)]
        assert isinstance(outcomes[9], Rejected)
        assert outcomes[9].code == "too_large"

        second = await updates.__anext__()
        assert trio.current_time() == t0 + 2.0
        assert second.total_messages_sent == 10
        assert second.total_messages_acked == 9
        assert second.rejected == 1
        assert second.current_queue_size == 0
        assert second.outbox_bytes == 0
        assert second.duplicates == 0
        assert second.replayed == 0
        assert second.ack_latency_p50 == 0.5  # the store's commit time, exactly
        assert second.ack_latency_p99 is not None
        assert second.ack_latency_p99 >= 0.5
        third = await updates.__anext__()
        assert trio.current_time() == t0 + 4.0
        assert third.to_dict()["total_messages_acked"] == 9
        assert set(third.to_dict()) >= {
            "total_reconnects",
            "total_messages_sent",
            "total_messages_acked",
            "current_queue_size",
            "outbox_bytes",
            "average_reconnect_time",
            "ack_latency_p50",
            "ack_latency_p99",
            "replayed",
            "duplicates",
            "rejected",
        }
    # The feeds end with the connection.
    assert [m async for m in updates] == []
    assert [o async for o in acks] == []


async def test_reconnect_time_and_replays(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with memory_server() as ms:
        online = ms.connector("a")
        attempts = 0

        async def slow_second_time(nursery: trio.Nursery, url: str, connect_timeout: float):  # type: ignore[no-untyped-def]
            nonlocal attempts
            attempts += 1
            if attempts == 2:
                await trio.sleep(3)  # the network takes 3 s to come back
            return await online(nursery, url, connect_timeout)

        async with open_realtime(URL, config=MEMORY, token="a", connector=slow_second_time) as conn:
            ms.drop("a")
            await wait_state(conn, ConnectionState.RECONNECTING)
            await wait_state(conn, ConnectionState.CONNECTED, within=100)
            metrics = conn.metrics
            assert metrics.total_reconnects == 1
            assert metrics.average_reconnect_time == 3.0
    # Events journaled by a process that never reached the server are replays when sent later.
    config = RealtimeConfig(network_monitor=False, initial_retry_delay=0.05, max_retry_delay=0.1)

    async def refused(nursery: trio.Nursery, url: str, connect_timeout: float):  # type: ignore[no-untyped-def]
        await trio.lowlevel.checkpoint()
        raise LinkClosed(None, "refused")

    async with open_realtime(URL, config=config, journal_dir=tmp_path, connector=refused) as conn:
        await conn.send_many("room", "n", [1, 2, 3])
        await conn.aclose(grace_period=0)
    async with (
        memory_server() as ms,
        open_realtime(
            URL, config=config, journal_dir=tmp_path, token="a", connector=ms.connector("a")
        ) as conn,
    ):
        await conn.drain()
        assert conn.metrics.replayed == 3
        assert conn.metrics.total_messages_sent == 0  # sent by the earlier process
        assert conn.metrics.total_messages_acked == 3  # acked in this run
