"""Minimal send and receive: an embedded server and two clients on loopback.

Run it: python examples/send_receive.py
"""

from __future__ import annotations

import tempfile

import trio

from trio_realtime import Message, open_realtime
from trio_realtime.server import AllowAll, MemoryStore, open_server


async def main() -> None:
    with tempfile.TemporaryDirectory() as journals:
        async with open_server(MemoryStore(), AllowAll()) as server:
            url = f"ws://127.0.0.1:{server.port}/realtime"
            async with open_realtime(url, journal_dir=f"{journals}/alice", token="alice") as alice:
                await alice.subscribe("room:1")
                async with open_realtime(url, journal_dir=f"{journals}/bob", token="bob") as bob:
                    receipt = await bob.send("room:1", "chat_message", {"text": "hi alice"})
                    print("bob's send:", await receipt.wait())
                async for msg in alice.messages("room:1"):
                    assert isinstance(msg, Message)
                    print(f"alice got #{msg.offset} from {msg.sender}: {msg.payload['text']}")
                    break


if __name__ == "__main__":
    trio.run(main)
