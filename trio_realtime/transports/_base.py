"""The transport interface: whole messages in and out, and a close with a code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from .._errors import LinkClosed

__all__ = ["Connector", "LinkClosed", "Transport"]


class Transport(Protocol):
    """One link between a client and a server: whole messages both ways, in order, and a close
    with a code. Any implementation must keep this contract (``trio_realtime.testing.
    check_transport`` checks it):

    * Each message sent is received whole, once, in the order sent; a message of several MiB
      (up to the transport's own limit) is no exception.
    * One task sends and one task receives at a time (the writer and the reader); they run
      concurrently.
    * :meth:`aclose` sends ``code`` and ``reason`` to the peer, whose next :meth:`receive` (after
      any message already in flight) raises :class:`LinkClosed` carrying them; it returns within a
      bounded time even if the peer is gone, and closing twice is harmless.
    * :meth:`abort` drops the link at once; the peer's :meth:`receive` raises :class:`LinkClosed`
      (code 1006 when the transport has codes).
    * Once this side closed or aborted, or the peer closed, :meth:`send` and :meth:`receive`
      raise :class:`LinkClosed`, never another error, and never block forever.
    """

    async def send(self, data: bytes | str) -> None:
        """Send one message (a frame or a batch). Raises :class:`LinkClosed`."""

    async def receive(self) -> bytes | str:
        """The next message. Raises :class:`LinkClosed` when the link is gone."""

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the link (bounded in time; never waits long for a peer that may be gone)."""

    async def abort(self) -> None:
        """Drop the link at once, without a close handshake (when being cancelled)."""


#: Opens a transport to ``url`` within ``nursery`` (which owns its background tasks), giving up
#: after ``timeout`` seconds.
Connector = Callable[[trio.Nursery, str, float], Awaitable[Transport]]
