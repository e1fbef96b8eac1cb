"""Code run in child processes by the Socket.IO crash test (imported by the forkserver, not
collected)."""

from __future__ import annotations

from multiprocessing.connection import Connection

import trio

from trio_realtime import RealtimeConfig, open_realtime

CONFIG = RealtimeConfig(initial_retry_delay=0.02, max_retry_delay=0.2, network_monitor=False)


def send_numbers(url: str, journal: str, conn: Connection) -> None:
    """Send ``{"n": i}`` on channel ``crash`` over Socket.IO, continuing from the journal's
    ``last_seq``, and report each seq whose ``send`` returned, until killed."""

    async def main() -> None:
        async with open_realtime(url, journal_dir=journal, config=CONFIG) as client:
            n = client.last_seq
            while True:
                receipt = await client.send("crash", "n", {"n": n})
                conn.send(receipt.seq)
                n += 1
                await trio.sleep(0.002)  # paced, so a kill lands at a random point among sends

    trio.run(main)
