"""The WebSocket transport, on trio-websocket."""

from __future__ import annotations

import ssl
from typing import Any, cast
from urllib.parse import urlsplit

import trio
import trio_websocket

from ._base import LinkClosed

__all__ = ["RECEIVE_BUFFER_BYTES", "SUBPROTOCOL", "WebSocketTransport", "connect_websocket"]

#: Bytes asked of the socket per read. trio-websocket's default (4 KiB) cut a 200 KiB batch
#: message into 50 reads, each a trip through trio's socket layer and wsproto's parser and
#: unmasking: 10% of the server's time under load.
RECEIVE_BUFFER_BYTES = 64 * 1024

SUBPROTOCOL = "trio-realtime.v1"
#: Longest wait for a close handshake: the peer may be gone, and the default is 60 s.
CLOSE_TIMEOUT = 2.0


class WebSocketTransport:
    """A trio-websocket connection behind the :class:`Transport` interface.

    Messages are sent as text (UTF-8 JSON, PROTOCOL.md section 1).
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self._torn = False
        self._aborted = False

    async def send(self, data: bytes | str) -> None:
        if self._aborted:
            raise LinkClosed(1006, "aborted")
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None
        except BaseException:
            # Cancelled (or failed) part-way: the stream may end in the middle of a frame, and a
            # close frame written after it would be read as that frame's payload. Only an abort
            # is safe from now on.
            self._torn = True
            raise

    async def receive(self) -> bytes | str:
        if self._aborted:
            raise LinkClosed(1006, "aborted")
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None
        if self._aborted:
            # trio-websocket keeps the messages it had queued when the stream was dropped (it
            # drops them only on its own close): after an abort, none is delivered.
            raise LinkClosed(1006, "aborted")
        return message

    async def abort(self) -> None:
        self._aborted = True
        stream = getattr(self._ws, "_stream", None)
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self._torn:
            await self.abort()
            return
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await self._ws.aclose(code, reason or None)
        # trio-websocket can leave the TCP stream open after some closes (a 1009 among them), and
        # after a timed-out handshake: close it ourselves.
        stream = getattr(self._ws, "_stream", None)
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


def _closed(exc: trio_websocket.ConnectionClosed) -> LinkClosed:
    reason = exc.reason
    code = getattr(reason, "code", None)
    text = getattr(reason, "reason", None) or ""
    return LinkClosed(code, text)


class _HandshakeWatch(trio.abc.Stream):
    """The TCP (or TLS) stream as trio-websocket sees it: notes when the peer ends it."""

    def __init__(self, inner: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        self.inner = inner
        self.ended = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.ended.set()
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        return data

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        self.ended.set()
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:  # e.g. .socket, for the peer's address
        return getattr(self.inner, name)


async def connect_websocket(
    nursery: trio.Nursery,
    url: str,
    connect_timeout: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = 16 * 1024 * 1024,
    subprotocols: tuple[str, ...] = (SUBPROTOCOL,),
) -> WebSocketTransport:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) offering our subprotocol (or
    ``subprotocols``).

    Raises:
        LinkClosed: the connection could not be opened in ``connect_timeout`` seconds or was
            refused.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    if secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
    try:
        with trio.fail_after(connect_timeout):
            if secure:
                assert ssl_context is not None
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=ssl_context, https_compatible=True
                )
                # Handshake now, so a certificate that does not verify fails here at once
                # instead of inside trio-websocket's reader, where it would wait for the timeout.
                await stream.do_handshake()
            else:
                stream = await trio.open_tcp_stream(host, port)
            # We own the stream: trio-websocket does not close it if the handshake is cancelled.
            # trio-websocket waits for the handshake's answer even after the peer closed the
            # connection (it would wait out connect_timeout): the watch ends the wait at once.
            watched = _HandshakeWatch(stream)
            ws: trio_websocket.WebSocketConnection | None = None
            async with trio.open_nursery() as race:

                async def give_up_when_closed() -> None:
                    await watched.ended.wait()
                    race.cancel_scope.cancel()

                race.start_soon(give_up_when_closed)
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    cast("trio.SocketStream", watched),
                    host_header,
                    resource,
                    subprotocols=list(subprotocols),
                    message_queue_size=64,
                    max_message_size=max_message_size,
                    receive_buffer_size=RECEIVE_BUFFER_BYTES,
                )
                race.cancel_scope.cancel()
            if ws is None:
                raise LinkClosed(1006, "the connection closed during the handshake")
    except BaseException as exc:
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
        if isinstance(exc, trio.TooSlowError):
            raise LinkClosed(None, f"connect timed out after {connect_timeout} s") from None
        if isinstance(exc, trio_websocket.HandshakeError):
            raise LinkClosed(None, f"handshake failed: {exc}") from None
        if isinstance(exc, OSError | trio.BrokenResourceError):
            # OSError: refused, unreachable; BrokenResourceError: the TLS handshake failed (a
            # certificate that does not verify, among others).
            cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
            raise LinkClosed(None, f"cannot connect: {cause}") from None
        raise
    return WebSocketTransport(ws)
