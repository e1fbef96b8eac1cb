"""A transport written outside the package, with public names only, plugs in by URL scheme and
passes what the built-in ones pass: the conformance kit, and a connection's whole life over it
(send and ack, a subscription, a drop by the server and the resume after it)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio
import trio.testing

from trio_realtime import Connection, Message, RealtimeConfig, open_realtime
from trio_realtime.testing import MemoryServer, check_transport, open_memory_server
from trio_realtime.transports import (
    Connector,
    LinkClosed,
    Transport,
    register_transport,
    registered_schemes,
)


class PipeTransport:
    """One end of a "pipe": a link made of two trio memory channels, written from scratch."""

    def __init__(
        self,
        out: trio.MemorySendChannel[str | bytes],
        into: trio.MemoryReceiveChannel[str | bytes],
    ) -> None:
        self._out, self._in = out, into
        self.closed: tuple[int | None, str] | None = None
        self.peer: PipeTransport | None = None

    def _gone(self) -> LinkClosed:
        if self.closed is not None:
            return LinkClosed(*self.closed)
        if self.peer is not None and self.peer.closed is not None:
            return LinkClosed(*self.peer.closed)
        return LinkClosed(1006, "")

    async def send(self, data: bytes | str) -> None:
        if self.closed is not None:
            raise self._gone()
        try:
            await self._out.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._gone() from None

    async def receive(self) -> bytes | str:
        if self.closed is not None:
            raise self._gone()
        try:
            return await self._in.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._gone() from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
        await self._out.aclose()
        await self._in.aclose()

    async def abort(self) -> None:
        if self.closed is None:
            self.closed = (1006, "")
        await self.aclose()


def pipe() -> tuple[PipeTransport, PipeTransport]:
    a_out, b_in = trio.open_memory_channel[str | bytes](math.inf)
    b_out, a_in = trio.open_memory_channel[str | bytes](math.inf)
    a, b = PipeTransport(a_out, a_in), PipeTransport(b_out, b_in)
    a.peer, b.peer = b, a
    return a, b


#: The server each pipe:// URL reaches (by its host part), for the registered factory.
SERVERS: dict[str, MemoryServer] = {}


def pipe_factory(url: str, config: RealtimeConfig) -> Connector:
    host = url.removeprefix("pipe://").split("/", 1)[0]
    if not host:
        raise ValueError(f"a pipe URL names its server: pipe://name/, got {url!r}")

    async def connect(nursery: trio.Nursery, _url: str, connect_timeout: float) -> Transport:
        server = SERVERS.get(host)
        if server is None:
            raise LinkClosed(None, f"no pipe server {host!r}")
        client, server_end = pipe()
        server.serve(server_end)
        await trio.lowlevel.checkpoint()
        return client

    return connect


if "pipe" not in registered_schemes():
    register_transport("pipe", pipe_factory)


@asynccontextmanager
async def pipe_pair() -> AsyncIterator[tuple[Transport, Transport]]:
    a, b = pipe()
    yield a, b


async def test_the_pipe_passes_the_conformance_kit() -> None:
    await check_transport(pipe_pair)


CONFIG = RealtimeConfig(durability="memory", network_monitor=False, initial_retry_delay=0.01)
Opener = Callable[[str], AbstractAsyncContextManager[Connection]]


@asynccontextmanager
async def by_url(server: MemoryServer, name: str) -> AsyncIterator[Opener]:
    """Open connections by a ``pipe://`` URL: the registry picks our connector."""
    SERVERS[name] = server
    try:
        yield lambda user: open_realtime(f"pipe://{name}/", token=user, config=CONFIG)
    finally:
        del SERVERS[name]


@asynccontextmanager
async def by_builtin(server: MemoryServer, name: str) -> AsyncIterator[Opener]:
    """The built-in memory transport, for comparison."""
    connector = server.connector()
    yield lambda user: open_realtime(server.url, token=user, config=CONFIG, connector=connector)


@pytest.mark.parametrize("how", [by_url, by_builtin], ids=["third-party", "built-in"])
async def test_a_connection_lives_its_whole_life_over_it(
    how: Callable[[MemoryServer, str], AbstractAsyncContextManager[Opener]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_server() as server,
        how(server, "one") as open_as,
        open_as("bob") as bob,
        open_as("alice") as alice,
    ):
        await bob.subscribe("room")
        receipt = await alice.send("room", "chat", {"n": 1})
        assert (await receipt.wait()).seq == 1
        async with bob.messages("room") as messages:
            first = await messages.__anext__()
            assert isinstance(first, Message)
            assert first.payload == {"n": 1}
            # The server drops bob (going away): he reconnects and resumes where he was.
            assert server.drop("bob") == 1
            await alice.send("room", "chat", {"n": 2})
            second = await messages.__anext__()
            assert isinstance(second, Message)
            assert (second.offset, second.payload) == (2, {"n": 2})
        assert bob.metrics.total_reconnects >= 1


async def test_an_unknown_scheme_and_a_bad_url_are_typed_errors() -> None:
    from trio_realtime import ConfigError

    with pytest.raises(ConfigError, match="no transport"):
        async with open_realtime("carrier-pigeon://x/", config=CONFIG):
            pass  # pragma: no cover
    with pytest.raises(ConfigError, match="names its server"):
        async with open_realtime("pipe:///", config=CONFIG):
            pass  # pragma: no cover
