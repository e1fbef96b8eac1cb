"""Typing indicators: bob sees alice typing, then the flag clears when her message arrives.

Run it: python examples/typing_indicators.py
"""

from __future__ import annotations

import trio

from trio_realtime import RealtimeConfig, open_realtime
from trio_realtime.server import AllowAll, MemoryStore, open_server

CONFIG = RealtimeConfig(durability="memory")


async def main() -> None:
    async with open_server(MemoryStore(), AllowAll()) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        async with (
            open_realtime(url, token="alice", config=CONFIG) as alice,
            open_realtime(url, token="bob", config=CONFIG) as bob,
        ):
            await bob.subscribe("room:1")
            typing = bob.typing.changes("room:1")
            print("typing now:", set(await typing.__anext__()))
            for _ in range(20):  # one call per keystroke is fine: repeats are throttled
                await alice.typing.set("room:1", True)
            print("typing now:", set(await typing.__anext__()))
            await alice.send("room:1", "chat_message", {"text": "hello bob"})
            print("typing now:", set(await typing.__anext__()), "(her message arrived)")


if __name__ == "__main__":
    trio.run(main)
