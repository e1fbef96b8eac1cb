"""Metrics: a live feed of snapshots, and every ack as it arrives (the onAck stream).

Run it: python examples/metrics_feed.py
"""

from __future__ import annotations

import tempfile

import trio

from trio_realtime import open_realtime
from trio_realtime.server import AllowAll, SqliteStore, open_server


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(f"{tmp}/server.sqlite3")
        async with (
            open_server(store, AllowAll()) as server,
            open_realtime(
                f"ws://127.0.0.1:{server.port}/realtime", journal_dir=f"{tmp}/journal", token="me"
            ) as conn,
            trio.open_nursery() as nursery,
        ):

            async def show_acks() -> None:
                async for outcome in conn.acks():
                    print("delivered:", outcome)

            async def show_metrics() -> None:
                async for m in conn.metrics_updates(interval=0.2):
                    p50 = f"{m.ack_latency_p50 * 1000:.1f} ms" if m.ack_latency_p50 else "-"
                    print(
                        f"sent {m.total_messages_sent}, acked {m.total_messages_acked}, p50 {p50}"
                    )

            nursery.start_soon(show_acks)
            nursery.start_soon(show_metrics)
            for n in range(3):
                await conn.send("room:1", "tick", n)
            await conn.drain()
            await trio.sleep(0.3)  # let the feed print one more snapshot
            print("final:", conn.metrics.to_dict())
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
