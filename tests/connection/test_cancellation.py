"""Cancelling open_realtime at random moments loses no journaled send and leaves nothing behind."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

from trio_realtime import open_realtime

from ..figures import record
from .conftest import FAST, running_server, url

ROUNDS = int(os.environ.get("TRIO_REALTIME_CANCEL_ROUNDS", "150"))


@pytest.mark.slow
async def test_random_cancellations(data: Path) -> None:
    rng = random.Random(11)
    returned: list[int] = []
    counter = 0
    async with running_server(data) as server:
        for _ in range(ROUNDS):
            with trio.move_on_after(rng.uniform(0, 0.05)):
                async with open_realtime(
                    url(server), journal_dir=data / "c", token="c", config=FAST
                ) as conn:
                    while True:
                        await conn.send("room", "n", counter)
                        returned.append(counter)  # send returned: it must be delivered
                        counter += 1
        # No task of the connections outlived their block (structured concurrency), and one last
        # connection delivers whatever the cancelled ones left in the journal.
        async with open_realtime(
            url(server), journal_dir=data / "c", token="c", config=FAST
        ) as conn:
            with trio.fail_after(30):
                await conn.drain()
        stored = await server.store.read("room", 0, 100_000)
    assert [e.payload for e in stored] == returned
    assert len(returned) > ROUNDS
    record(
        "cancellations",
        {
            "cancellations": ROUNDS,
            "sends_returned": len(returned),
            "stored": len(stored),
            "lost": 0,
            "duplicated": 0,
            "reordered": 0,
        },
    )
