"""Send events to a stock Socket.IO server and read what it broadcasts, with the journal and acks
of trio_realtime.

Start a server first (see examples/SOCKETIO.md), for instance
``node examples/socketio_server.js --port 3000``, then ``python examples/socketio_client.py``
(``SOCKETIO_URL`` overrides ``socketio://127.0.0.1:3000/chat``).
"""

from __future__ import annotations

import os
import tempfile

import trio

from trio_realtime import Message, RealtimeConfig, open_realtime

URL = os.environ.get("SOCKETIO_URL", "socketio://127.0.0.1:3000/chat")


async def main() -> None:
    config = RealtimeConfig(network_monitor=False)
    with tempfile.TemporaryDirectory() as journal:
        async with open_realtime(URL, journal_dir=journal, config=config) as conn:
            await conn.subscribe("/chat")  # the namespace is the channel
            receipt = await conn.send("room:1", "chat", {"text": "hello from trio"})
            print("server acked:", await receipt.wait())
            async with conn.messages() as messages:
                async for item in messages:
                    if isinstance(item, Message) and item.event == "chat":
                        print("broadcast:", item.payload, "key", item.idempotency_key)
                        break


if __name__ == "__main__":
    trio.run(main)
