"""A link that fails at any step is a link failure: the connection reconnects, and nothing of a
transport's error reaches the application."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_realtime import ConnectionState, Message, RealtimeConfig, open_realtime
from trio_realtime.testing import open_memory_server
from trio_realtime.transports import Connector, LinkClosed, Transport

CONFIG = RealtimeConfig(durability="memory", network_monitor=False, initial_retry_delay=0.5)


class FailsAt:
    """Wraps a transport: its first ``send`` or ``receive`` (per ``step``) raises LinkClosed."""

    def __init__(self, inner: Transport, step: str) -> None:
        self.inner, self.step = inner, step

    async def send(self, data: bytes | str) -> None:
        if self.step == "send":
            await self.inner.abort()
            raise LinkClosed(1006, "dropped while sending resume")
        await self.inner.send(data)

    async def receive(self) -> bytes | str:
        if self.step == "receive":
            await self.inner.abort()
            raise LinkClosed(1006, "dropped before resume_response")
        return await self.inner.receive()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)

    async def abort(self) -> None:
        await self.inner.abort()


@pytest.mark.parametrize("step", ["send", "receive", "connect"])
async def test_a_link_dropped_during_the_handshake_is_retried(
    step: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_memory_server() as server:
        inner = server.connector()
        attempts: list[float] = []

        async def connect(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
            attempts.append(trio.current_time())
            if len(attempts) == 1 and step == "connect":
                raise LinkClosed(None, "refused")
            transport = await inner(nursery, url, connect_timeout)
            return FailsAt(transport, step) if len(attempts) == 1 else transport

        connector: Connector = connect
        async with open_realtime(
            server.url, token="alice", config=CONFIG, connector=connector
        ) as conn:
            with trio.fail_after(10):
                await conn.wait_connected()
            assert conn.state is ConnectionState.CONNECTED
            assert len(attempts) == 2
            assert conn.metrics.total_reconnects == 1
            receipt = await conn.send("room", "chat", "after the drop")
            assert (await receipt.wait()).seq == 1


async def test_subscribe_says_where_events_start(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_server() as server:
        connector = server.connector()
        async with (
            open_realtime(server.url, token="alice", config=CONFIG, connector=connector) as alice,
            open_realtime(server.url, token="bob", config=CONFIG, connector=connector) as bob,
        ):
            assert await bob.subscribe("empty") == 0
            for n in range(3):
                await alice.send("room", "chat", n)
            await alice.drain()
            assert await bob.subscribe("room") == 3  # from now: after the newest
            assert await bob.subscribe("room") == 3  # already subscribed: where it stands
            await bob.unsubscribe("room")
            assert await bob.subscribe("room", from_offset=1) == 1
            async with bob.messages("room") as messages:
                first = await messages.__anext__()
            assert isinstance(first, Message)
            assert first.offset == 2
