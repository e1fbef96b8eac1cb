"""A custom auth delegate: the server refuses the first token (close 4001), the client asks the
delegate for a fresh one and reconnects on its own.

Run it: python examples/auth_delegate.py
"""

from __future__ import annotations

import tempfile

import trio

from trio_realtime import open_realtime
from trio_realtime.server import HmacAuthenticator, MemoryStore, make_token, open_server

SECRET = b"example secret, keep yours out of source code"


class MyAuth:
    """What your app provides: a cached token, and a way to get a new one."""

    def __init__(self) -> None:
        self.refreshes = 0

    async def get_token(self) -> str:
        return "an-expired-token"

    async def refresh_token(self) -> str:
        self.refreshes += 1
        return make_token(SECRET, "alice", ttl=3600)  # in real life: call your auth service


async def main() -> None:
    auth = MyAuth()
    with tempfile.TemporaryDirectory() as journal:
        async with open_server(MemoryStore(), HmacAuthenticator(SECRET)) as server:
            url = f"ws://127.0.0.1:{server.port}/realtime"
            async with open_realtime(url, journal_dir=journal, auth=auth) as conn:
                receipt = await conn.send("room:1", "hello", {"from": "alice"})
                print("outcome:", await receipt.wait())
                print("token refreshes:", auth.refreshes, "- state:", conn.state.value)


if __name__ == "__main__":
    trio.run(main)
