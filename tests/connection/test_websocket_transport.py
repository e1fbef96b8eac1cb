"""The WebSocket transport's connect, against peers that misbehave during the handshake."""

from __future__ import annotations

import pytest
import trio

from trio_realtime.transports import LinkClosed, connect_websocket


async def test_a_peer_closing_during_the_handshake_fails_the_connect_at_once(
    nursery: trio.Nursery,
) -> None:
    async def read_request_then_close(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)  # the HTTP upgrade request
        await stream.aclose()  # no answer: a proxy whose upstream is down does this

    listeners = await nursery.start(trio.serve_tcp, read_request_then_close, 0)
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5):  # well before the 60 s connect timeout below
        with pytest.raises(LinkClosed, match="closed during the handshake"):
            await connect_websocket(nursery, f"ws://127.0.0.1:{port}/realtime", 60.0)
