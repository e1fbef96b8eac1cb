"""A client process SIGKILLed while sending and restarted on the same journal: every send that
returned is delivered exactly once, in order."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import trio

from ..figures import record
from . import _children
from .conftest import running_server, url

KILLS = int(os.environ.get("TRIO_REALTIME_CLIENT_KILLS", "100"))
TOTAL = 30 * KILLS + 100  # more than the lives before the last can send: none finishes early


@pytest.fixture(scope="module")
def mp() -> Any:
    # forkserver: a child starts in milliseconds from a server process that imported trio_realtime
    # already, so a thousand lives fit in a few minutes.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["trio", "trio_realtime", "tests.connection._children"])
    return ctx


async def receive(conn: Connection) -> Any:
    """The child's next report (EOFError once it is dead and everything was read)."""
    while not conn.poll():
        await trio.lowlevel.wait_readable(conn.fileno())
    return conn.recv()


@pytest.mark.slow
async def test_sigkilled_client_loses_and_duplicates_nothing(data: Path, mp: Any) -> None:
    rng = random.Random(4)
    returned: set[int] = set()
    async with running_server(data) as server:
        journal = os.fspath(data / "client")
        for life in range(KILLS + 1):
            parent, child = mp.Pipe(duplex=False)
            log = data / "life.log"
            os.environ["TRIO_REALTIME_CHILD_LOG"] = os.fspath(log)  # the forkserver passes it on
            proc = mp.Process(
                target=_children.send_numbers, args=(url(server), journal, "bob", TOTAL, child)
            )
            proc.start()
            child.close()
            target = rng.randrange(0, 30) if life < KILLS else None
            got = 0
            while target is None or got < target:
                # Stuck means no report for 60 s (the last life sends thousands: no total limit).
                with trio.move_on_after(60) as stuck:
                    report = await receive(parent)
                if stuck.cancelled_caught:
                    tail = log.read_text()[-4000:] if log.exists() else "(no log)"
                    os.kill(proc.pid, signal.SIGKILL)
                    raise AssertionError(
                        f"life {life} reported nothing for 60 s after {got} sends; its log:\n{tail}"
                    )
                if report == "done":
                    break
                returned.add(report)
                got += 1
            log.unlink(missing_ok=True)
            if target is not None:
                os.kill(proc.pid, signal.SIGKILL)
            await trio.to_thread.run_sync(proc.join, 30)
            # What it reported before dying: those sends returned too.
            try:
                while parent.poll():
                    report = parent.recv()
                    if report != "done":
                        returned.add(report)
            except (EOFError, ConnectionResetError):
                pass
            parent.close()
            assert proc.exitcode == (0 if target is None else -signal.SIGKILL)
        stored = await server.store.read("crash", 0, 10 * TOTAL)
    numbers = [e.payload["n"] for e in stored]
    assert numbers == list(range(TOTAL)), "lost, duplicated or reordered"
    assert {seq - 1 for seq in returned} <= set(numbers)
    assert len(returned) > KILLS
    record(
        "client_crash",
        {
            "sigkills": KILLS,
            "messages": TOTAL,
            "sends_returned_before_a_kill_or_the_end": len(returned),
            "stored": len(numbers),
            "lost": 0,
            "duplicated": 0,
            "reordered": 0,
        },
    )
