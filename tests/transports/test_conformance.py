"""The transport contract, through the public conformance kit
(``trio_realtime.testing.check_transport``): both built-in transports pass it, over memory and over
a real WebSocket on loopback; and transports that break a rule fail it, naming the rule."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial

import pytest
import trio
import trio_websocket

from trio_realtime.testing import check_transport
from trio_realtime.transports import (
    RECEIVE_BUFFER_BYTES,
    SUBPROTOCOL,
    LinkClosed,
    Transport,
    WebSocketTransport,
    connect_websocket,
    memory_transport_pair,
)

PairFactory = Callable[[], AbstractAsyncContextManager[tuple[Transport, Transport]]]


@asynccontextmanager
async def memory_pair() -> AsyncIterator[tuple[Transport, Transport]]:
    yield memory_transport_pair()


@asynccontextmanager
async def websocket_pair() -> AsyncIterator[tuple[Transport, Transport]]:
    """A trio-websocket server on 127.0.0.1 (a free port) whose handler wraps the accepted
    connection in a WebSocketTransport, as the server does, and a client from connect_websocket."""
    accepted_send, accepted_receive = trio.open_memory_channel[WebSocketTransport](1)
    done = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        assert SUBPROTOCOL in request.proposed_subprotocols
        ws = await request.accept(subprotocol=SUBPROTOCOL)
        await accepted_send.send(WebSocketTransport(ws))
        await done.wait()  # trio-websocket closes the connection when the handler returns

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                handler,
                "127.0.0.1",
                0,
                None,
                max_message_size=16 * 1024 * 1024,
                receive_buffer_size=RECEIVE_BUFFER_BYTES,
            )
        )
        client = await connect_websocket(nursery, f"ws://127.0.0.1:{server.port}/realtime", 10.0)
        with trio.fail_after(10):
            server_end = await accepted_receive.receive()
        try:
            yield client, server_end
        finally:
            done.set()
            nursery.cancel_scope.cancel()


async def test_the_memory_transport_keeps_the_contract() -> None:
    await check_transport(memory_pair)


async def test_the_memory_transport_keeps_the_contract_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    await check_transport(memory_pair)


async def test_the_websocket_transport_keeps_the_contract() -> None:
    await check_transport(websocket_pair)


# --- The kit can fail ------------------------------------------------------------------------


class Wrapper:
    """A transport that forwards to another: the broken ones below change one thing."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.closed = False

    async def send(self, data: bytes | str) -> None:
        await self.inner.send(data)

    async def receive(self) -> bytes | str:
        return await self.inner.receive()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self.closed = True
        await self.inner.aclose(code, reason)

    async def abort(self) -> None:
        self.closed = True
        await self.inner.abort()


class Reorders(Wrapper):
    """Sends every second message before the one before it."""

    held: bytes | str | None = None

    async def send(self, data: bytes | str) -> None:
        if self.held is None:
            self.held = data
            return
        await self.inner.send(data)
        await self.inner.send(self.held)
        self.held = None


class Splits(Wrapper):
    """Delivers a message of over 1 MiB as two."""

    async def send(self, data: bytes | str) -> None:
        if len(data) > 1024 * 1024:
            await self.inner.send(data[: len(data) // 2])
            await self.inner.send(data[len(data) // 2 :])
        else:
            await self.inner.send(data)


class Latin1(Wrapper):
    """Decodes the bytes it is given as Latin-1."""

    async def send(self, data: bytes | str) -> None:
        await self.inner.send(data.decode("latin-1") if isinstance(data, bytes) else data)


class DropsCloseCode(Wrapper):
    """Reports every close as a normal one."""

    async def receive(self) -> bytes | str:
        try:
            return await self.inner.receive()
        except LinkClosed:
            raise LinkClosed(1000, "") from None


class DropsCloseReason(Wrapper):
    """Sends the close code, not the reason."""

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await super().aclose(code)


class AbortIsANormalClose(Wrapper):
    async def abort(self) -> None:
        await self.aclose()


class ClosedResourceAfterClose(Wrapper):
    """Lets trio's ClosedResourceError out after its own close."""

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            raise trio.ClosedResourceError("closed")
        await self.inner.send(data)


class HangsAfterClose(Wrapper):
    """Waits forever in receive() after its own close."""

    async def receive(self) -> bytes | str:
        if self.closed:
            await trio.sleep_forever()
        return await self.inner.receive()


class CloseRaisesTwice(Wrapper):
    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            raise RuntimeError("already closed")
        await super().aclose(code, reason)


class SendsAfterPeerClose(Wrapper):
    """Swallows sends once the peer closed (a message lost, silently)."""

    peer_closed = False

    async def send(self, data: bytes | str) -> None:
        if self.closed or not self.peer_closed:
            await self.inner.send(data)

    async def receive(self) -> bytes | str:
        try:
            return await self.inner.receive()
        except LinkClosed:
            self.peer_closed = True
            raise


def broken(kind: type[Wrapper]) -> PairFactory:
    @asynccontextmanager
    async def pair() -> AsyncIterator[tuple[Transport, Transport]]:
        client, server = memory_transport_pair()
        yield kind(client), kind(server)

    return pair


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        (Reorders, "each message sent is received whole, once, and in the order sent"),
        (Splits, "a large message arrives whole"),
        (Latin1, "receive() gives the text that was sent"),
        (DropsCloseCode, "aclose(code, reason) reaches the peer"),
        (DropsCloseReason, "aclose(code, reason) reaches the peer"),
        (AbortIsANormalClose, "abort() drops the link"),
        (
            ClosedResourceAfterClose,
            "after this end's aclose() or abort(), its send() and receive()",
        ),
        (HangsAfterClose, "after this end's aclose() or abort(), its send() and receive()"),
        (CloseRaisesTwice, "aclose() is harmless whenever it is called"),
        (SendsAfterPeerClose, "receive() and send() keep raising LinkClosed"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
async def test_a_broken_transport_fails_the_kit_naming_the_rule(
    kind: type[Wrapper], rule: str, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(AssertionError, match=re.escape(rule)) as failure:
        await check_transport(broken(kind))
    print(failure.value)  # shown with -s: what a failure reads like
