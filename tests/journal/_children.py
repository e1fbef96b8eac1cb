"""Code run in child processes by the crash tests (imported by the forkserver, not collected)."""

from __future__ import annotations

import os
from multiprocessing.connection import Connection

import trio

from trio_realtime._journal import open_journal

from .helpers import frame


def append_forever(directory: str, conn: Connection, appenders: int) -> None:
    """Append with ``appenders`` concurrent tasks; report each seq once its append has returned."""

    async def main() -> None:
        async with open_journal(directory) as journal:
            conn.send(("ready", journal.last_seq))

            async def worker() -> None:
                while True:
                    seq = journal.next_seq
                    await journal.append(seq, frame(seq))
                    conn.send(seq)

            async with trio.open_nursery() as nursery:
                for _ in range(appenders):
                    nursery.start_soon(worker)

    trio.run(main)


def hold_lock(directory: str, conn: Connection) -> None:
    """Open the journal, report our pid, and keep it open until told to stop."""

    async def main() -> None:
        async with open_journal(directory):
            conn.send(("ready", os.getpid()))
            await trio.to_thread.run_sync(conn.recv)

    trio.run(main)
