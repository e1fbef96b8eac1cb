"""A client process SIGKILLed while emitting to the Node Socket.IO server, restarted on the same
journal several times (issue 20's crash test), checked against the server's log of acked events:
every send that returned reaches the server; an event is logged again only when it was sent again
after its ack was lost, and then under the same idempotency key (the server flags it a
duplicate)."""

from __future__ import annotations

import multiprocessing
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_realtime import open_realtime

from ..connection.test_crash_delivery import kill_after
from . import _children
from .servers import open_node_server


@pytest.fixture(scope="module")
def mp() -> Any:
    # forkserver: a child starts in milliseconds from a server process that imported trio_realtime
    # already (a plain fork of the trio test process would not be safe).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["trio", "trio_realtime", "tests.socketio._children"])
    return ctx


async def one_life(mp: Any, url: str, journal: str, target: int, delay: float) -> list[int]:
    """Run ``_children.send_numbers`` until it reported ``target`` returned sends, SIGKILL it
    ``delay`` seconds later, and return every seq it reported (those read after the kill too)."""
    reports: list[int] = await kill_after(
        mp, _children.send_numbers, (url, journal), lambda got: len(got) >= target, delay
    )
    return reports


async def test_sigkilled_socketio_client_loses_nothing_and_duplicates_under_its_key(
    tmp_path: Path, mp: Any
) -> None:
    rng = random.Random(20)
    journal = os.fspath(tmp_path / "client")
    lives = rng.randint(4, 6)
    returned: list[int] = []  # the seqs whose send returned, in every life
    async with open_node_server(tmp_path) as server:
        url = f"socketio://127.0.0.1:{server.port}/chat"
        for _ in range(lives):
            # Killed after 0-39 returned sends, then at once or a little later: before, during
            # or after the next send's journal write, emit or ack.
            target = rng.randrange(0, 40)
            delay = rng.choice([0.0, 0.0, 0.0005, 0.001, 0.002, 0.005])
            reports = await one_life(mp, url, journal, target, delay)
            assert len(reports) >= target
            # Each life continues after the journal's last seq, one seq per send.
            if reports:
                assert reports == list(range(reports[0], reports[0] + len(reports)))
                assert not returned or reports[0] > returned[-1]
            returned += reports
        # A last client on the same journal, in this process, sends nothing and drains it.
        async with open_realtime(url, journal_dir=journal, config=_children.CONFIG) as conn:
            with trio.fail_after(20):
                await conn.drain()
            client_id = conn.client_id
            last_seq = conn.last_seq
    logged = server.received()  # the server is stopped: this is all it will ever have acked

    def seq_of(key: str) -> int:
        prefix, _, seq = key.rpartition(":")
        assert prefix == client_id, f"a key not of this client: {key!r}"
        return int(seq)

    seen: set[int] = set()
    firsts: list[int] = []  # seqs of the lines not flagged duplicate, in log order
    duplicates: list[int] = []
    for line in logged:
        assert (line["ns"], line["event"]) == ("/chat", "n")
        seq = seq_of(line["key"])
        # The envelope: its key is the event's own, and so is its data ({"n": seq - 1}).
        assert line["args"] == [
            {"channel": "crash", "idempotency_key": line["key"], "data": {"n": seq - 1}}
        ]
        if line["duplicate"]:
            assert seq in seen, f"seq {seq} flagged a duplicate before its first copy"
            duplicates.append(seq)
        else:
            assert seq not in seen, f"seq {seq} logged twice without the same key"
            firsts.append(seq)
        seen.add(seq)

    missing = sorted(set(returned) - set(firsts))
    assert not missing, f"sends that returned never reached the server: seqs {missing}"
    assert len(firsts) == len(set(firsts)), "a key logged as new twice"
    assert firsts == sorted(firsts), "first appearances out of seq order"
    # Nothing reached the server that the journal lacks, and everything the journal has did:
    # the sends that returned, and at most one per kill whose send was cut off before it
    # returned (journaled, maybe already emitted, but never reported).
    assert firsts == list(range(1, last_seq + 1))
    assert len(set(firsts) - set(returned)) <= lives
    # Sent again only by a later process (the one before died before the ack reached its
    # journal): at most once per process.
    copies = Counter(seq_of(line["key"]) for line in logged)
    assert max(copies.values()) <= lives + 1
    assert len(returned) > lives  # the kills landed among sends, not before them all
    print(
        f"{lives} lives, {len(returned)} sends returned, {last_seq} journaled, "
        f"{len(duplicates)} duplicates (seqs {duplicates})"
    )
