"""The Socket.IO link layer keeps the transport contract: ``check_transport`` on two
:class:`SocketIOMessages` ends relayed by the Node server's ``/relay`` namespace. Both Socket.IO
transports run on the same layer (``SioLink``: the WebSocket, Engine.IO's handshake and
heartbeat, packets in order, whole sends, close and abort); the one for stock servers adds only
the bridge to our protocol, which tests/socketio/test_transport.py checks against the servers."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from trio_realtime.testing import check_transport
from trio_realtime.transports import Transport
from trio_realtime.transports._socketio import connect_socketio_messages

from .servers import open_node_server


async def test_the_socketio_link_passes_check_transport(tmp_path: Path) -> None:
    async with open_node_server(tmp_path) as server, trio.open_nursery() as nursery:
        url = f"socketio://127.0.0.1:{server.port}/relay"

        @asynccontextmanager
        async def pair() -> AsyncIterator[tuple[Transport, Transport]]:
            room = {"room": secrets.token_hex(8)}
            a = await connect_socketio_messages(nursery, url, 10, auth=room)
            b = await connect_socketio_messages(nursery, url, 10, auth=room)
            try:
                yield a, b
            finally:
                await a.abort()
                await b.abort()

        await check_transport(pair)
        nursery.cancel_scope.cancel()
