"""CachedAuth: many connections share one token; when it expires, one refresh serves them all.

Run it: python examples/shared_auth.py
"""

from __future__ import annotations

import trio

from trio_realtime import CachedAuth, RealtimeConfig, connect_realtime
from trio_realtime.server import HmacAuthenticator, MemoryStore, make_token, open_server

SECRET = b"example secret, keep yours out of source code"


async def main() -> None:
    async def fetch_token() -> str:
        await trio.sleep(0.1)  # in real life: ask your auth service
        return make_token(SECRET, "alice", ttl=3600)

    expired = make_token(SECRET, "alice", ttl=-1)
    auth = CachedAuth(fetch_token, token=expired)
    async with (
        open_server(MemoryStore(), HmacAuthenticator(SECRET)) as server,
        trio.open_nursery() as nursery,
    ):
        url = f"ws://127.0.0.1:{server.port}/realtime"
        config = RealtimeConfig(durability="memory", initial_retry_delay=0.05)
        connections = [
            await connect_realtime(nursery, url, auth=auth, config=config) for _ in range(20)
        ]
        for conn in connections:
            receipt = await conn.send("room:1", "hello", None)
            await receipt.wait()
        print(f"{len(connections)} connections, all acked; token fetches: {auth.refreshes}")
        for conn in connections:
            await conn.aclose()


if __name__ == "__main__":
    trio.run(main)
