"""The reference server in memory, for an application's own tests: no sockets, no threads, no
files (with the memory store), so it runs under ``trio.testing.MockClock`` with exact virtual
times."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from .._groups import single_error
from ..server import AllowAll, Authenticator, RealtimeServer, ServerConfig, Store, store_from_url
from ..transports import Connector, Transport, memory_transport_pair

__all__ = ["MEMORY_URL", "MemoryServer", "open_memory_server"]

#: A URL for ``open_realtime`` with a memory server's connector (nothing is looked up).
MEMORY_URL = "ws://memory.invalid/realtime"


@attrs.define
class MemoryServer:
    """A running in-memory server (see :func:`open_memory_server`)."""

    server: RealtimeServer
    """The engine: ``server.sessions`` are the open connections."""
    _nursery: trio.Nursery

    @property
    def url(self) -> str:
        return MEMORY_URL

    def connector(self) -> Connector:
        """A connector for ``open_realtime(MEMORY_URL, connector=...)``: each connection attempt
        is a new in-memory link served by this server."""

        async def connect(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
            client, server_end = memory_transport_pair()
            self.serve(server_end)
            await trio.lowlevel.checkpoint()
            return client

        return connect

    def serve(self, transport: Transport) -> None:
        """Serve one link: ``transport`` is the server's end of it (of any transport, yours
        included), handled like every connection until it closes."""
        self._nursery.start_soon(self.server.handle, transport)

    def drop(self, user: str, code: int = 1001) -> int:
        """Close ``user``'s connections from the server's side (1001, going away: the clients
        reconnect at once); returns how many there were."""
        sessions = [s for s in self.server.sessions if s.user == user]
        for session in sessions:
            session.close(code, "dropped by the test")
            session.scope.cancel()
        return len(sessions)


@asynccontextmanager
async def open_memory_server(
    *,
    store: Store | str = "memory:",
    authenticator: Authenticator | None = None,
    config: ServerConfig | None = None,
) -> AsyncIterator[MemoryServer]:
    """Run the reference server in memory for the block::

        async with open_memory_server() as server:
            async with open_realtime(server.url, token="alice", connector=server.connector(),
                                     config=RealtimeConfig(durability="memory")) as conn:
                ...

    ``store``: a store or its URL (default ``memory:``); ``authenticator``: default
    :class:`~trio_realtime.server.AllowAll` (the token is taken as the user name). The store is
    opened here and closed on exit.
    """
    if isinstance(store, str):
        store = store_from_url(store)
    server = RealtimeServer(store, authenticator or AllowAll(), config)
    await store.open()
    try:
        with single_error():
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                yield MemoryServer(server, nursery)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
