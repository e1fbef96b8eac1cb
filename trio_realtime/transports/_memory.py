"""An in-memory transport: a pair of ends joined by memory channels, for tests."""

from __future__ import annotations

import math

import trio

from ._base import LinkClosed

__all__ = ["MemoryTransport", "memory_transport_pair"]


class MemoryTransport:
    """One end of an in-memory link."""

    def __init__(
        self,
        outgoing: trio.MemorySendChannel[bytes | str],
        incoming: trio.MemoryReceiveChannel[bytes | str],
    ) -> None:
        self._out = outgoing
        self._in = incoming
        self.close_code: int | None = None
        self.close_reason = ""
        self.peer: MemoryTransport | None = None

    async def send(self, data: bytes | str) -> None:
        if self.close_code is not None:
            raise LinkClosed(self.close_code, self.close_reason)
        try:
            await self._out.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise LinkClosed(*self._peer_close()) from None

    async def receive(self) -> bytes | str:
        try:
            return await self._in.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.close_code is not None:
                raise LinkClosed(self.close_code, self.close_reason) from None
            raise LinkClosed(*self._peer_close()) from None

    def _peer_close(self) -> tuple[int, str]:
        """The code and reason the peer closed with (1006: it never said)."""
        if self.peer is not None and self.peer.close_code is not None:
            return self.peer.close_code, self.peer.close_reason
        return 1006, ""

    async def abort(self) -> None:
        await self.aclose(1006)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        await self._out.aclose()
        await self._in.aclose()


def memory_transport_pair() -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected ends: what one sends, the other receives."""
    a_send, b_receive = trio.open_memory_channel[bytes | str](math.inf)
    b_send, a_receive = trio.open_memory_channel[bytes | str](math.inf)
    a = MemoryTransport(a_send, a_receive)
    b = MemoryTransport(b_send, b_receive)
    a.peer, b.peer = b, a
    return a, b
