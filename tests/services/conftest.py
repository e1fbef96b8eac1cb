"""Helpers for the services' tests: the reference server in memory (for MockClock timing, no
sockets or threads) and on loopback (for real clients)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from trio_realtime import Connection, ConnectionState, RealtimeConfig, open_realtime
from trio_realtime._protocol import ClientFrame, decode_client_message
from trio_realtime.server import RealtimeServer, ServerConfig
from trio_realtime.testing import open_memory_server
from trio_realtime.transports import Transport, memory_transport_pair

from ..helpers import Watched

URL = "ws://server.invalid/realtime"

#: Connections in memory: no journal, no network monitor, quick retries.
MEMORY = RealtimeConfig(
    durability="memory",
    initial_retry_delay=0.05,
    max_retry_delay=0.5,
    network_monitor=False,
)


class Recording:
    """A server-side transport that keeps every frame the client sent (frames on the wire)."""

    def __init__(self, inner: Transport, frames: list[tuple[float, ClientFrame]]) -> None:
        self._inner = inner
        self._frames = frames

    async def send(self, data: bytes) -> None:
        await self._inner.send(data)

    async def receive(self) -> bytes | str:
        data = await self._inner.receive()
        now = trio.current_time()
        self._frames.extend((now, frame) for frame in decode_client_message(data))
        return data

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.aclose(code, reason)

    async def abort(self) -> None:
        await self._inner.abort()


@attrs.define
class MemoryServer:
    server: RealtimeServer
    nursery: trio.Nursery
    received: dict[str, Watched[tuple[float, ClientFrame]]] = attrs.Factory(dict)
    """Per token: (time, frame) for every frame the server received from it."""

    def connector(self, token: str):  # type: ignore[no-untyped-def]
        async def connect(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
            client, server_end = memory_transport_pair()
            frames = self.received.setdefault(token, Watched())
            self.nursery.start_soon(self.server.handle, Recording(server_end, frames))
            await trio.lowlevel.checkpoint()
            return client

        return connect

    def client(self, user: str):  # type: ignore[no-untyped-def]
        """``open_realtime`` for ``user`` (the token AllowAll takes as the user name)."""
        return open_realtime(URL, config=MEMORY, token=user, connector=self.connector(user))

    def frames(self, token: str, kind: type) -> list[tuple[float, ClientFrame]]:
        return [(t, f) for t, f in self.received.get(token, []) if isinstance(f, kind)]

    async def wait_frames(self, token: str, kind: type, count: int, within: float = 30) -> None:
        """Wait until the server has received ``count`` frames of ``kind`` from ``token``."""
        frames = self.received.setdefault(token, Watched())
        await frames.wait_until(lambda: len(self.frames(token, kind)) >= count, within)

    def drop(self, user: str, code: int = 1001) -> None:
        drop(self.server, user, code)


def drop(server: RealtimeServer, user: str, code: int = 1001) -> int:
    """Close ``user``'s connections from the server side (1001: going away, so the client
    reconnects at once); returns how many."""
    sessions = [s for s in server.sessions if s.user == user]
    for session in sessions:
        session.close(code, "dropped by the test")
        session.scope.cancel()
    return len(sessions)


@asynccontextmanager
async def memory_server(config: ServerConfig | None = None) -> AsyncIterator[MemoryServer]:
    """The public in-memory server (``trio_realtime.testing``), with each client's frames
    recorded as the server receives them."""
    async with open_memory_server(config=config) as running:
        yield MemoryServer(running.server, running._nursery)


async def wait_state(conn: Connection, wanted: ConnectionState, within: float = 10) -> None:
    with trio.fail_after(within):
        async for state in conn.states():
            if state is wanted:
                return


async def next_item(stream: object, within: float = 10) -> object:
    """The next item of a service's stream, failing clearly if none comes in time."""
    with trio.fail_after(within):
        return await stream.__anext__()  # type: ignore[attr-defined]


async def watch_presence(conn: Connection, channel: str) -> object:
    """Subscribe ``conn`` to ``channel`` and open its presence changes, past the (empty) first."""
    await conn.subscribe(channel)
    changes = conn.presence.changes(channel)
    first = await next_item(changes)
    assert not first.joins
    assert not first.leaves
    return changes
