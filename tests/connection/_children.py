"""Code run in child processes by the client crash test (imported by the forkserver)."""

from __future__ import annotations

import logging
import os
from multiprocessing.connection import Connection

import trio

from trio_realtime import RealtimeConfig, open_realtime


def send_numbers(url: str, journal: str, token: str, total: int, conn: Connection) -> None:
    """Send ``{"n": i}`` for i up to ``total`` - 1, continuing where the journal says it stopped;
    report each seq whose ``send`` returned, then ``"done"`` once everything is acknowledged."""

    log = os.environ.get("TRIO_REALTIME_CHILD_LOG")
    if log:  # what this life did, for a test that has to explain a hang
        logging.basicConfig(
            filename=log, level=logging.INFO, format="%(relativeCreated)6d %(name)s %(message)s"
        )
        logging.getLogger("trio_realtime").setLevel(logging.DEBUG)

    async def main() -> None:
        config = RealtimeConfig(
            initial_retry_delay=0.02, max_retry_delay=0.2, network_monitor=False
        )
        async with open_realtime(url, journal_dir=journal, token=token, config=config) as client:
            for n in range(client.last_seq, total):
                receipt = await client.send("crash", "n", {"n": n})
                conn.send(receipt.seq)
                await trio.sleep(0.002)  # paced, so a kill lands at a random point among sends
            await client.drain()
            conn.send("done")

    trio.run(main)
