"""The WebSocket front of the reference server: accepts WebSocket connections (trio-websocket) and
hands each one to the engine as a transport; ``open_server`` and ``serve``."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from .._groups import single_error
from .._journal import acquire_lock, release_lock
from .._protocol import CloseCode
from ..transports import RECEIVE_BUFFER_BYTES, SUBPROTOCOL, WebSocketTransport
from ._auth import Authenticator
from ._config import ServerConfig
from ._engine import RealtimeServer
from ._registry import store_from_url
from ._sqlite import SqliteStore
from ._store import Store

__all__ = ["open_server", "serve"]

logger = logging.getLogger("trio_realtime.server")


async def _websocket_handler(
    server: RealtimeServer, request: trio_websocket.WebSocketRequest
) -> None:
    allowed = server.config.allowed_origins
    origin = {k.lower(): v for k, v in request.headers}.get(b"origin")
    try:
        ws = await request.accept(
            subprotocol=SUBPROTOCOL if SUBPROTOCOL in request.proposed_subprotocols else None
        )
    except trio_websocket.ConnectionClosed:
        return  # the peer went away before the handshake's answer
    logger.debug("WebSocket connection from %s", ws.remote)
    transport = WebSocketTransport(ws)
    if allowed is not None and (origin is None or origin.decode("latin-1") not in allowed):
        logger.warning(
            "refused a connection from %s: Origin %.100r is not allowed",
            ws.remote,
            origin.decode("latin-1") if origin is not None else None,
        )
        await transport.aclose(CloseCode.POLICY_VIOLATION, "origin not allowed")
        return
    await server.handle(transport)


@asynccontextmanager
async def open_server(
    store: Store | str,
    authenticator: Authenticator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RealtimeServer]:
    """Run a WebSocket server for the block; ``server.port`` is the port it listens on (``port=0``
    picks a free one). With ``ssl_context`` it serves ``wss://``. ``store`` is a store or its URL
    (``sqlite:///path/db``, ``memory:``, see :func:`register_store`); it is opened here and closed
    on exit."""
    if isinstance(store, str):
        store = store_from_url(store)
    server = RealtimeServer(store, authenticator, config)
    try:
        await store.open()
        with single_error():
            async with trio.open_nursery() as nursery:

                async def handler(request: trio_websocket.WebSocketRequest) -> None:
                    try:
                        await _websocket_handler(server, request)
                    except Exception:
                        # One connection's failure must never end the server (trio-websocket would
                        # let it cancel every other connection).
                        logger.exception("connection handler failed")

                await nursery.start(server.run)
                ws_server = await nursery.start(
                    lambda task_status: trio_websocket.serve_websocket(
                        handler,
                        host,
                        port,
                        ssl_context,
                        # Up to 2x is read, so a lone oversized event is rejected by itself (see
                        # _process); beyond that, trio-websocket closes with 1009. It counts text
                        # in characters (up to 4 bytes each, and 4 bytes each in a Python str), so
                        # a connection holds at most (2 queued + 1 being read) x 2 x 4 x
                        # max_frame_bytes of messages not yet processed: 24 MiB by default.
                        max_message_size=2 * server.config.max_frame_bytes,
                        receive_buffer_size=RECEIVE_BUFFER_BYTES,
                        connect_timeout=server.config.handshake_timeout,
                        disconnect_timeout=2,
                        message_queue_size=2,
                        task_status=task_status,
                    )
                )
                server.port = ws_server.port
                try:
                    yield server
                finally:
                    with trio.CancelScope(shield=True):
                        await server.drop_connections()  # at once, not a close handshake each
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


async def serve(
    data_dir: str,
    *,
    store: Store | str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    config: ServerConfig | None = None,
    task_status: trio.TaskStatus[RealtimeServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the reference server until cancelled: the HMAC token authenticator with its secret in
    ``data_dir``, and ``store`` (a store or its URL; default: SQLite in ``data_dir``).

    One server at a time uses ``data_dir``: it holds the directory's lock while it runs (two
    servers on one store would each number the channels' events on their own).

    Raises:
        JournalLocked: another process (its pid in ``.pid``) runs a server on ``data_dir``.
    """
    from ._auth import HmacAuthenticator, load_or_create_secret

    lock = await trio.to_thread.run_sync(acquire_lock, data_dir)
    try:
        secret = await trio.to_thread.run_sync(load_or_create_secret, data_dir)
        if store is None:
            store = SqliteStore(os.path.join(data_dir, "server.sqlite3"))
        async with open_server(
            store, HmacAuthenticator(secret), host=host, port=port, config=config
        ) as server:
            task_status.started(server)
            await trio.sleep_forever()
    finally:
        release_lock(lock)
