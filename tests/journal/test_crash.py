"""Crash tests with real processes: SIGKILL while appending, and the lock across processes."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from multiprocessing.connection import Connection
from typing import Any

import pytest

from trio_realtime import JournalLocked
from trio_realtime._journal import open_journal, recover

from ..figures import record
from . import _children
from .helpers import frame

#: Iterations of the kill loop: 100 in the default run, more under `nox -s stress`.
ITERATIONS = int(os.environ.get("TRIO_REALTIME_STRESS", "100"))


@pytest.fixture(scope="module")
def mp() -> Any:
    # forkserver: children start in milliseconds from a clean single-threaded server process that
    # has imported trio_realtime already, instead of a fresh interpreter each time.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["trio", "trio_realtime", "tests.journal._children"])
    return ctx


def _recv(conn: Connection, timeout: float = 30.0) -> Any:
    if not conn.poll(timeout):
        raise AssertionError(f"child said nothing for {timeout} s")
    return conn.recv()


def _drain(conn: Connection) -> list[int]:
    seqs = []
    try:
        while conn.poll(0):
            seqs.append(conn.recv())
    except (EOFError, ConnectionResetError):
        pass
    return seqs


@pytest.mark.slow
def test_sigkill_while_appending_never_loses_a_returned_append(mp: Any, tmp_path: Any) -> None:
    directory = os.fspath(tmp_path / "journal")
    rng = random.Random(20261124)
    acknowledged: set[int] = set()
    for iteration in range(ITERATIONS):
        parent, child = mp.Pipe(duplex=False)
        appenders = rng.choice([1, 4, 16])
        proc = mp.Process(target=_children.append_forever, args=(directory, child, appenders))
        proc.start()
        child.close()
        tag, last_seq = _recv(parent)
        assert tag == "ready"
        # Every acknowledged append of earlier lives is there when the journal reopens.
        assert last_seq >= max(acknowledged, default=0)
        # Let it run for a random number of returned appends (0: kill it during its first ones).
        for _ in range(rng.randrange(0, 40)):
            acknowledged.add(_recv(parent))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        acknowledged.update(_drain(parent))
        parent.close()

        state = recover(directory)
        seqs = [entry.seq for entry in state.pending]
        assert seqs == list(range(1, len(seqs) + 1)), f"iteration {iteration}: a gap or a reorder"
        missing = acknowledged - set(seqs)
        assert not missing, f"iteration {iteration}: lost returned appends {sorted(missing)[:10]}"
        assert all(entry.data == frame(entry.seq) for entry in state.pending)
    assert len(acknowledged) > ITERATIONS  # the children did real work
    record(
        "journal_crash",
        {
            "sigkills": ITERATIONS,
            "appends_returned": len(acknowledged),
            "missing": 0,
            "seq_gaps_or_reorders": 0,
        },
    )


def test_second_process_gets_journal_locked(mp: Any, tmp_path: Any) -> None:
    import trio

    directory = os.fspath(tmp_path / "journal")
    parent, child = mp.Pipe()
    proc = mp.Process(target=_children.hold_lock, args=(directory, child))
    proc.start()
    tag, pid = _recv(parent)
    assert (tag, pid) == ("ready", proc.pid)

    async def try_open() -> None:
        async with open_journal(directory):
            pass

    with pytest.raises(JournalLocked) as info:
        trio.run(try_open)
    assert info.value.pid == proc.pid
    assert str(proc.pid) in str(info.value)

    # A holder that dies without closing (SIGKILL) leaves no stale lock: the OS drops it.
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    trio.run(try_open)
