"""TLS end to end: wss:// works with a trusted certificate, and verification is on by default."""

from __future__ import annotations

import ssl
from pathlib import Path

import trio
import trustme

from trio_realtime import Acked, ConnectionState, RealtimeConfig, open_realtime
from trio_realtime.server import AllowAll, MemoryStore, open_server


async def test_tls_with_a_trusted_ca_and_refused_without(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with open_server(MemoryStore(), AllowAll(), ssl_context=server_context) as server:
        url = f"wss://127.0.0.1:{server.port}/realtime"
        trusted = RealtimeConfig(ssl_context=client_context)
        async with open_realtime(
            url, journal_dir=tmp_path / "a", token="a", config=trusted
        ) as conn:
            assert conn.state is ConnectionState.CONNECTED
            with trio.fail_after(10):
                assert await (await conn.send("room", "e", 1)).wait() == Acked(1)
        # Default settings: the system trust store does not know this CA, so the certificate is
        # refused and the client never connects (it keeps retrying, as for any network failure).
        strict = RealtimeConfig(
            max_retries=1, initial_retry_delay=0.01, max_retry_delay=0.01, connect_timeout=2
        )
        async with open_realtime(url, journal_dir=tmp_path / "b", token="b", config=strict) as conn:
            with trio.fail_after(10):
                async for state in conn.states():
                    assert state is not ConnectionState.CONNECTED
                    if state is ConnectionState.FAILED:
                        break
        assert len(await server.store.read("room", 0, 10)) == 1
