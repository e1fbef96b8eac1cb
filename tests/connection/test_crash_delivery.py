"""Client processes SIGKILLed under each delivery strategy, and during a withdrawal, checked
against what the server stored."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_realtime import RealtimeConfig, open_realtime

from . import _children
from .conftest import running_server, url
from .test_client_crash import receive


@pytest.fixture(scope="module")
def mp() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["trio", "trio_realtime", "tests.connection._children"])
    return ctx


async def kill_after(
    mp: Any, target: Any, args: tuple[Any, ...], wanted: Any, delay: float = 0.0
) -> list[Any]:
    """Start ``target(*args, pipe)`` in a child, read its reports until ``wanted(reports)``
    says so, SIGKILL it ``delay`` seconds later, and return every report it made."""
    parent, child = mp.Pipe(duplex=False)
    proc = mp.Process(target=target, args=(*args, child))
    proc.start()
    child.close()
    reports: list[Any] = []
    try:
        with trio.fail_after(60):
            while not wanted(reports):
                reports.append(await receive(parent))
        await trio.sleep(delay)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await trio.to_thread.run_sync(proc.join, 30)
    try:
        while parent.poll():
            reports.append(parent.recv())
    except (EOFError, ConnectionResetError):
        pass
    parent.close()
    assert proc.exitcode == -signal.SIGKILL
    return reports


async def drain(server: Any, journal: str, token: str) -> str:
    """Open the journal with the server up until everything in it is acknowledged; returns its
    client_id."""
    config = RealtimeConfig(network_monitor=False)
    async with open_realtime(url(server), journal_dir=journal, token=token, config=config) as c:
        with trio.fail_after(30):
            await c.drain()
        return c.client_id


@pytest.mark.parametrize("strategy", ["at_least_once", "best_effort_ordered", "at_most_once"])
async def test_sigkill_under_each_strategy(strategy: str, data: Path, mp: Any) -> None:
    rng = random.Random(strategy)
    journal = os.fspath(data / "client")
    sent: set[tuple[int, int]] = set()
    # Sends called but not reported returned when the kill came (one at most per life): the
    # kill may land after the event's journal record was written (before its fsync finished, or
    # between the return and the report). The record survives the process, so the event may be
    # stored (sent by the killed life, or by the next one from the journal) or not.
    interrupted: set[tuple[int, int]] = set()
    acked: set[tuple[int, int]] = set()
    async with running_server(data) as server:
        for life in range(4):
            target = rng.randrange(5, 40)
            reports = await kill_after(
                mp,
                _children.send_with_strategy,
                (url(server), journal, "erin", strategy, life),
                lambda got, target=target: sum(1 for kind, _ in got if kind == "sent") >= target,
            )
            returned = {(life, n) for kind, n in reports if kind == "sent"}
            called = {(life, n) for kind, n in reports if kind == "sending"}
            assert returned <= called
            assert len(called - returned) <= 1
            sent |= returned
            interrupted |= called - returned
            acked |= {(life, n) for kind, n in reports if kind == "acked"}
        if strategy == "at_least_once":  # the journal outlives the kills: drain it
            await drain(server, journal, "erin")
        stored = [
            (e.payload["life"], e.payload["n"]) for e in await server.store.read("crash", 0, 10**6)
        ]
    assert len(stored) == len(set(stored)), "stored twice"
    for life in range(4):
        numbers = [n for lf, n in stored if lf == life]
        assert numbers == sorted(numbers), "out of order"
    assert acked <= set(stored), f"acked, not stored: {sorted(acked - set(stored))}"
    extra = set(stored) - sent - interrupted
    assert not extra, f"stored, never sent: {sorted(extra)}"
    if strategy == "at_least_once":  # every send that returned reached the server
        assert sent <= set(stored), f"lost: {sorted(sent - set(stored))}"
    assert len(acked) >= 4


async def test_a_send_killed_after_its_journal_write_is_delivered_once(data: Path, mp: Any) -> None:
    """A process SIGKILLed inside ``send`` once the event's record is written, before its fsync
    returned: the record survives the process, so the event is delivered (exactly once), though
    its send never returned. (The sends interrupted in test_sigkill_under_each_strategy.)"""
    journal = os.fspath(data / "client")
    async with running_server(data) as server:
        reports = await kill_after(
            mp,
            _children.send_held_in_fsync,
            (url(server), journal, "erin"),
            lambda got: ("written", 1) in got,
        )
        await drain(server, journal, "erin")
        numbers = [e.payload["n"] for e in await server.store.read("crash", 0, 10**6)]
    assert ("sent", 1) not in reports
    assert numbers == [0, 1]


async def test_sigkill_during_a_discard_loses_and_duplicates_nothing(data: Path, mp: Any) -> None:
    """Events journaled offline, then discarded, the process SIGKILLed at a random point of the
    discard (or after it returned), restarted with a server: each event is stored once or not at
    all, in order; none once the discard had returned; every seq consumed."""
    rng = random.Random(19)
    async with running_server(data) as probe:
        port = probe.port
    dead = f"ws://127.0.0.1:{port}/realtime"
    outcomes = []
    for life in range(9):
        journal = os.fspath(data / f"client-{life}")
        after_return = life % 3 == 2
        delay = rng.choice([0.0, 0.0, 0.0002, 0.0005, 0.001])

        def wanted(got: list[Any], after_return: bool = after_return) -> bool:
            return ("discarded" if after_return else "journaled") in got

        reports = await kill_after(
            mp,
            _children.discard_offline,
            (dead, journal, 300),
            wanted,
            0 if after_return else delay,
        )
        returned = "discarded" in reports
        (data / f"server-{life}").mkdir()
        async with running_server(data / f"server-{life}", port=port) as server:
            client_id = await drain(server, journal, "dan")
            numbers = [e.payload["n"] for e in await server.store.read("crash", 0, 10**6)]
            rows = await server.store.load(clients=(client_id,))
        # One withdrawal record: all of them withdrawn, or (killed before it was written) none.
        assert numbers in ([], list(range(300))), "lost part, stored twice or out of order"
        if returned:
            assert numbers == [], "a discarded event was stored"
        assert rows.clients[client_id].ack_seq == 300  # every seq consumed: stored or skipped
        outcomes.append((returned, len(numbers)))
    assert any(returned for returned, _ in outcomes)
