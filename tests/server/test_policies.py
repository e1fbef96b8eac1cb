"""Server policies: allowed Origins, rate limit, heartbeat timeout."""

from __future__ import annotations

import json

import trio
import trio_websocket

from trio_realtime.server import AllowAll, MemoryStore, ServerConfig, open_server

RESUME = json.dumps({"type": "resume", "protocol": 1, "client_id": "c-p", "last_ack_seq": 0})


async def close_code(
    config: ServerConfig, *messages: str, origin: bytes | None = None
) -> int | None:
    async with open_server(MemoryStore(), AllowAll(), config=config) as server:
        headers = [(b"Origin", origin)] if origin else None
        url = f"ws://127.0.0.1:{server.port}/realtime"
        async with trio_websocket.open_websocket_url(
            url, subprotocols=["trio-realtime.v1"], extra_headers=headers
        ) as ws:
            try:
                for message in messages:
                    await ws.send_message(message)
                with trio.fail_after(10):
                    while True:
                        await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason.code
            finally:
                await trio.aclose_forcefully(ws._stream)
    return None  # pragma: no cover


async def test_disallowed_origin_is_closed_1008() -> None:
    config = ServerConfig(allowed_origins=frozenset({"https://ok.example"}))
    assert await close_code(config, RESUME, origin=b"https://evil.example") == 1008
    assert await close_code(config, RESUME) == 1008  # no Origin at all
    ok = ServerConfig(allowed_origins=frozenset({"https://ok.example"}), heartbeat_timeout=0.2)
    # An allowed origin gets through the handshake (and is then closed for its silence).
    assert await close_code(ok, RESUME, origin=b"https://ok.example") == 4008


async def test_rate_limit_closes_4029() -> None:
    config = ServerConfig(rate_limit=5)
    pings = [json.dumps({"type": "ping", "t": i}) for i in range(50)]
    assert await close_code(config, RESUME, *pings) == 4029


async def test_silent_client_is_closed_4008() -> None:
    assert await close_code(ServerConfig(heartbeat_timeout=0.2), RESUME) == 4008
