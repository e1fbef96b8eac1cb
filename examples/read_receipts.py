"""Read receipts: bob reads alice's messages; alice sees "read by bob", and asks who read what.

Run it: python examples/read_receipts.py
"""

from __future__ import annotations

import tempfile

import trio

from trio_realtime import RealtimeConfig, open_realtime
from trio_realtime.server import AllowAll, SqliteStore, open_server

CONFIG = RealtimeConfig(durability="memory")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(f"{tmp}/server.sqlite3")  # receipts are persisted with the channel
        async with open_server(store, AllowAll()) as server:
            url = f"ws://127.0.0.1:{server.port}/realtime"
            async with (
                open_realtime(url, token="alice", config=CONFIG) as alice,
                open_realtime(url, token="bob", config=CONFIG) as bob,
            ):
                await alice.subscribe("room:1")
                await bob.subscribe("room:1")
                read = alice.receipts.changes("room:1")
                await alice.send_many("room:1", "chat_message", ["one", "two", "three"])
                async for message in bob.messages("room:1"):
                    if message.offset == 2:  # bob has read up to the second message
                        await bob.receipts.mark_read("room:1", message.offset)
                        break
                receipt = await read.__anext__()
                print(f"read by {receipt.user} up to #{receipt.offset}")
                print("has bob read #2?", alice.receipts.has_user_read("room:1", 2, "bob"))
                print("has bob read #3?", alice.receipts.has_user_read("room:1", 3, "bob"))
                print("who read #1:", await alice.receipts.get_receipts("room:1", 1))


if __name__ == "__main__":
    trio.run(main)
