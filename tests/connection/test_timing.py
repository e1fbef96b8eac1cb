"""Backoff and heartbeat timings, exact under trio's MockClock, over in-memory transports."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_realtime import ConnectionFailed, ConnectionState, RealtimeConfig, open_realtime
from trio_realtime._protocol import Ping, ResumeResponse, ServerProtocol
from trio_realtime.transports import LinkClosed, Transport, memory_transport_pair

from ..helpers import Watched

URL = "ws://server.invalid/realtime"


async def test_backoff_schedule_and_failed_after_max_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []

    async def refuse(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
        attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        raise LinkClosed(None, "connection refused")

    config = RealtimeConfig(
        initial_retry_delay=1.0, max_retry_delay=8.0, jitter=0.0, max_retries=6, durability="memory"
    )
    async with open_realtime(URL, config=config, connector=refuse) as conn:
        states = conn.states()
        seen = [s async for s in states]
    # First attempt, an immediate retry, then 1, 2, 4, 8, 8 seconds apart.
    assert attempts == [0.0, 0.0, 1.0, 3.0, 7.0, 15.0, 23.0]
    assert seen[-1] is ConnectionState.FAILED
    assert conn.state is ConnectionState.FAILED
    with pytest.raises(ConnectionFailed, match="gave up after 6 retries"):
        await conn.send("c", "e", 1)


def silent_server(answer_pings: bool):  # type: ignore[no-untyped-def]
    """A connector to an in-memory server that resumes, then answers pings or ignores them."""
    connects: Watched[float] = Watched()

    async def serve(end: Transport) -> None:
        proto = ServerProtocol()
        try:
            while True:
                proto.receive_data(await end.receive())
                for event in proto.events():
                    if proto.resume is not None and proto.state.value == "resuming":
                        await end.send(
                            proto.send(
                                ResumeResponse(proto.resume.client_id, "s", 0, 5000, 1 << 20, 0)
                            )
                        )
                    elif isinstance(event, Ping) and answer_pings:
                        await end.send(proto.send(event.response()))
        except LinkClosed:
            pass

    async def connect(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
        connects.append(trio.current_time())
        client, server = memory_transport_pair()
        nursery.start_soon(serve, server)
        await trio.lowlevel.checkpoint()
        return client

    return connect, connects


async def test_heartbeat_timeout_declares_the_link_dead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    connect, connects = silent_server(answer_pings=False)
    config = RealtimeConfig(heartbeat_interval=5.0, heartbeat_timeout=2.0, durability="memory")
    async with open_realtime(URL, config=config, connector=connect) as conn:
        assert conn.state is ConnectionState.CONNECTED
        await connects.wait_until(lambda: len(connects) >= 3, within=100)  # virtual seconds
    # Ping at 5, silence until 7: dead, reconnect at once (first retry is immediate); then the
    # same again 7 s later (the backoff was reset by the successful resume).
    assert connects == [0.0, 7.0, 14.0]


async def test_answered_heartbeats_keep_the_link(autojump_clock: trio.testing.MockClock) -> None:
    connect, connects = silent_server(answer_pings=True)
    config = RealtimeConfig(heartbeat_interval=5.0, heartbeat_timeout=2.0, durability="memory")
    async with open_realtime(URL, config=config, connector=connect) as conn:
        await trio.sleep(1000)
        assert conn.state is ConnectionState.CONNECTED
    assert connects == [0.0]
