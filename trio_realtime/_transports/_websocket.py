"""The WebSocket transport, on trio-websocket."""

from __future__ import annotations

import ssl

import trio
import trio_websocket

from ._base import TransportClosed

__all__ = ["SUBPROTOCOL", "WebSocketTransport", "connect_websocket"]

SUBPROTOCOL = "trio-realtime.v1"
#: Longest wait for a close handshake: the peer may be gone, and the default is 60 s.
CLOSE_TIMEOUT = 2.0


class WebSocketTransport:
    """A trio-websocket connection behind the :class:`Transport` interface.

    Messages are sent as text (UTF-8 JSON, PROTOCOL.md section 1).
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send(self, data: bytes | str) -> None:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive(self) -> bytes | str:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await self._ws.aclose(code, reason or None)
        # trio-websocket can leave the TCP stream open after some closes (a 1009 among them), and
        # after a timed-out handshake: close it ourselves.
        stream = getattr(self._ws, "_stream", None)
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


def _closed(exc: trio_websocket.ConnectionClosed) -> TransportClosed:
    reason = exc.reason
    code = getattr(reason, "code", None)
    text = getattr(reason, "reason", None) or ""
    return TransportClosed(code, text)


async def connect_websocket(
    nursery: trio.Nursery,
    url: str,
    connect_timeout: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = 16 * 1024 * 1024,
) -> WebSocketTransport:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) offering our subprotocol.

    Raises:
        TransportClosed: the connection could not be opened in ``connect_timeout`` seconds or was
            refused.
    """
    if url.startswith("wss://") and ssl_context is None:
        ssl_context = ssl.create_default_context()
    try:
        with trio.fail_after(connect_timeout):
            ws = await trio_websocket.connect_websocket_url(
                nursery,
                url,
                ssl_context=ssl_context,
                subprotocols=[SUBPROTOCOL],
                message_queue_size=64,
                max_message_size=max_message_size,
            )
    except trio.TooSlowError:
        raise TransportClosed(None, f"connect timed out after {connect_timeout} s") from None
    except trio_websocket.HandshakeError as exc:
        raise TransportClosed(None, f"handshake failed: {exc}") from None
    except OSError as exc:
        raise TransportClosed(None, f"cannot connect: {exc.strerror or exc}") from None
    return WebSocketTransport(ws)
