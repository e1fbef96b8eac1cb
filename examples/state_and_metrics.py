"""Watch the connection state and metrics while the server is away, then comes up. Sends made
while it is away wait in the journal and go out when it arrives.

Run it: python examples/state_and_metrics.py
"""

from __future__ import annotations

import socket
import tempfile

import trio

from trio_realtime import RealtimeConfig, open_realtime
from trio_realtime.server import AllowAll, SqliteStore, open_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def main() -> None:
    config = RealtimeConfig(initial_retry_delay=0.05, max_retry_delay=0.2)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/realtime"
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            open_realtime(url, journal_dir=f"{tmp}/journal", token="me", config=config) as conn,
            trio.open_nursery() as nursery,
        ):

            async def watch() -> None:
                async for state in conn.states():
                    print(f"state: {state.value:<12} pending: {conn.pending_count}")

            nursery.start_soon(watch)
            receipts = await conn.send_many("room:1", "tick", list(range(5)))
            print("sent 5 while no server runs:", conn.metrics.to_dict())
            async with open_server(SqliteStore(f"{tmp}/server.db"), AllowAll(), port=port):
                for receipt in receipts:
                    await receipt.wait()
                print("once the server is up:", conn.metrics.to_dict())
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
