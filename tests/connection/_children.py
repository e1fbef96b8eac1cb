"""Code run in child processes by the client crash test (imported by the forkserver)."""

from __future__ import annotations

import logging
import os
import threading
from multiprocessing.connection import Connection

import trio

from trio_realtime import Acked, RealtimeConfig, Receipt, open_realtime
from trio_realtime._journal._files import SegmentWriter


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


def send_with_strategy(
    url: str, journal: str, token: str, strategy: str, life: int, conn: Connection
) -> None:
    """Send ``{"life": life, "n": i}`` for i = 0, 1, ... under ``strategy`` until killed; report
    ``("sending", n)`` before each send is called, ``("sent", n)`` once it returned and
    ``("acked", n)`` once its ack came."""

    async def main() -> None:
        config = RealtimeConfig(
            delivery_strategy=strategy,
            initial_retry_delay=0.02,
            max_retry_delay=0.2,
            network_monitor=False,
        )
        async with (
            open_realtime(url, journal_dir=journal, token=token, config=config) as client,
            trio.open_nursery() as nursery,
        ):

            async def report_ack(n: int, receipt: Receipt) -> None:
                if isinstance(await receipt.wait(), Acked):
                    conn.send(("acked", n))

            for n in range(100_000):
                conn.send(("sending", n))
                receipt = await client.send("crash", "n", {"life": life, "n": n})
                conn.send(("sent", n))
                nursery.start_soon(report_ack, n, receipt)
                await trio.sleep(0.002)

    trio.run(main)


def send_held_in_fsync(url: str, journal: str, token: str, conn: Connection) -> None:
    """Send ``{"n": 0}`` and report ``("sent", 0)``; then send ``{"n": 1}`` with the journal's
    fsync held forever once its record is written: report ``("written", 1)`` from the fsync and
    wait there to be killed (``("sent", 1)`` is never reported)."""

    async def main() -> None:
        config = RealtimeConfig(network_monitor=False)
        async with open_realtime(url, journal_dir=journal, token=token, config=config) as client:
            await client.send("crash", "n", {"n": 0})
            conn.send(("sent", 0))

            def held_sync(writer: SegmentWriter) -> None:  # in the committer's worker thread
                conn.send(("written", 1))
                threading.Event().wait()

            SegmentWriter.sync = held_sync  # type: ignore[method-assign]
            await client.send("crash", "n", {"n": 1})
            conn.send(("sent", 1))

    trio.run(main)


def discard_offline(url: str, journal: str, count: int, conn: Connection) -> None:
    """With no server to reach, journal ``count`` events, report ``"journaled"``, then discard
    them all and report ``"discarded"`` (the parent kills it somewhere in between)."""

    async def main() -> None:
        config = RealtimeConfig(network_monitor=False, close_grace_period=0)
        async with open_realtime(url, journal_dir=journal, token="dan", config=config) as client:
            await client.send_many("crash", "n", [{"n": n} for n in range(count)])
            conn.send("journaled")
            await client.discard_pending()
            conn.send("discarded")
            await trio.sleep_forever()

    trio.run(main)
