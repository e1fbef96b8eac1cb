"""The transport interface: whole messages in and out, and a close with a code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

__all__ = ["Connector", "Transport", "TransportClosed"]


class TransportClosed(Exception):
    """The link is closed (by either side, or dropped: ``code`` 1006)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"link closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class Transport(Protocol):
    """One link to a server. ``send`` is only ever called by one task (the writer)."""

    async def send(self, data: bytes) -> None:
        """Send one message (a frame or a batch). Raises :class:`TransportClosed`."""

    async def receive(self) -> bytes | str:
        """The next message. Raises :class:`TransportClosed` when the link is gone."""

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the link (bounded in time; never waits long for a peer that may be gone)."""

    async def abort(self) -> None:
        """Drop the link at once, without a close handshake (when being cancelled)."""


#: Opens a transport to ``url`` within ``nursery`` (which owns its background tasks), giving up
#: after ``timeout`` seconds.
Connector = Callable[[trio.Nursery, str, float], Awaitable[Transport]]
