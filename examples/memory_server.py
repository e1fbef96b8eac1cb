"""The reference server in memory, for your own tests: no sockets, no threads, no files, and
exact virtual times under trio's MockClock.

Run it: python examples/memory_server.py
"""

from __future__ import annotations

import trio
import trio.testing

from trio_realtime import Acked, RealtimeConfig, open_realtime
from trio_realtime.testing import open_memory_server

CONFIG = RealtimeConfig(durability="memory", network_monitor=False)


async def main() -> None:
    async with open_memory_server() as server:  # store="memory:" and AllowAll by default
        connect = server.connector()
        async with (
            open_realtime(server.url, token="bob", config=CONFIG, connector=connect) as bob,
            open_realtime(server.url, token="alice", config=CONFIG, connector=connect) as alice,
        ):
            await bob.subscribe("room:1")
            receipt = await alice.send("room:1", "chat_message", {"text": "hi"})
            assert await receipt.wait() == Acked(seq=1)
            async for message in bob.messages("room:1"):
                print(f"{message.sender}: {message.payload['text']} at {trio.current_time():.1f}")
                break


if __name__ == "__main__":
    # Virtual time: the whole exchange takes 0.0 s of the clock, however loaded the machine.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
