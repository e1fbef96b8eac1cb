"""Four producer processes, four producer threads and an asyncio producer send to one queue while
its consumer (a child process) is started, SIGKILLed and left stopped, again and again."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import threading
from pathlib import Path

import attrs
import pytest
import trio

from trio_realtime.queue import QueueProducer
from trio_realtime.queue._consumer import inspect_queue

from ..figures import record

WORKERS = str(Path(__file__).with_name("_workers.py"))
ITEMS = int(os.environ.get("TRIO_REALTIME_QUEUE_ITEMS", "1000"))
CONSUMER_KILLS = 6


@attrs.define
class Child:
    process: trio.Process
    lines: list[list[str]] = attrs.Factory(list)
    done: trio.Event = attrs.Factory(trio.Event)


async def start(nursery: trio.Nursery, *args: str) -> Child:
    """Run _workers.py with ``args`` and a report pipe (its fd appended); collect its lines."""
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = await trio.lowlevel.open_process(
        [sys.executable, WORKERS, *args, str(write_fd)], pass_fds=[write_fd], env=env
    )
    os.close(write_fd)
    child = Child(process)

    async def read() -> None:
        buffer = b""
        async with trio.lowlevel.FdStream(read_fd) as stream:
            while data := await stream.receive_some(65536):
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                child.lines.extend(line.decode().split() for line in complete)
        await process.wait()  # a line cut by SIGKILL stays in ``buffer``: never reported
        child.done.set()

    nursery.start_soon(read)
    return child


def thread_producer(directory: str, count: int, sent: list[tuple[str, int, int]]) -> None:
    with QueueProducer("work", directory=directory) as producer:
        for n in range(count):
            sent.append((producer.producer_id, producer.send({"n": n}), n))


def asyncio_producer(directory: str, count: int, sent: list[tuple[str, int, int]]) -> None:
    async def run() -> None:
        with QueueProducer("work", directory=directory) as producer:
            for n in range(count):
                sent.append((producer.producer_id, await producer.asend({"n": n}), n))

    asyncio.run(run())


def check(lives: list[Child], expected_n: dict[tuple[str, int], int]) -> int:
    """What each consumer life reported: no acknowledged item delivered again (in a later life
    or after its ack), payloads as sent, each producer's items in order within a life. Returns
    how many items were handed out but not acknowledged before a kill (delivered again later)."""
    acked_before: set[tuple[str, int]] = set()
    redelivered = 0
    for life in lives:
        last_seq: dict[str, int] = {}
        acked_now: set[tuple[str, int]] = set()
        handed: set[tuple[str, int]] = set()
        for line in list(life.lines):
            key = (line[1], int(line[2]))
            if line[0] == "d":
                assert key not in acked_before, f"{key}, acked in an earlier life, came back"
                assert key not in acked_now, f"{key} came back after its ack"
                assert int(line[3]) == expected_n[key]
                assert int(line[2]) > last_seq.get(line[1], 0), "per-producer order broken"
                last_seq[line[1]] = int(line[2])
                handed.add(key)
            else:
                acked_now.add(key)
        redelivered += len(handed - acked_now)
        acked_before |= acked_now
    return redelivered


@pytest.mark.slow
async def test_every_returned_send_is_delivered_and_acked_items_never_return(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path / "queue")
    rng = random.Random(8)
    sent_in_threads: list[tuple[str, int, int]] = []
    lives: list[Child] = []
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            producers = [await start(nursery, "produce", directory, str(ITEMS)) for _ in range(4)]
            threads = [
                threading.Thread(target=thread_producer, args=(directory, ITEMS, sent_in_threads))
                for _ in range(4)
            ]
            threads.append(
                threading.Thread(target=asyncio_producer, args=(directory, ITEMS, sent_in_threads))
            )
            for thread in threads:
                thread.start()
            for _ in range(CONSUMER_KILLS):
                consumer = await start(nursery, "consume", directory)
                lives.append(consumer)
                await trio.sleep(rng.uniform(0.2, 1.0))  # let it consume for a while
                consumer.process.send_signal(signal.SIGKILL)
                await consumer.done.wait()
                await trio.sleep(rng.uniform(0.0, 0.5))  # no consumer at all for a while
            for producer in producers:
                await producer.done.wait()
                assert producer.process.returncode == 0
            await trio.to_thread.run_sync(lambda: [t.join() for t in threads])
            reports = [line for child in producers for line in child.lines]
            sent = {(p, int(s), int(n)) for _, p, s, n in reports}
            sent |= set(sent_in_threads)
            assert len(sent) == 9 * ITEMS
            # The last consumer runs until everything sent is delivered and nothing is pending
            # (an ack a killed consumer made durable but could not report counts as well).
            final = await start(nursery, "consume", directory)
            lives.append(final)

            def delivered() -> set[tuple[str, int]]:
                return {(x[1], int(x[2])) for c in lives for x in c.lines if x[0] == "d"}

            everything = {(p, s) for p, s, _ in sent}

            async def settled() -> bool:
                check(lives, {(p, s): n for p, s, n in sent})  # fail at once, not at the timeout
                if not everything <= delivered():
                    return False
                pending, _ = await trio.to_thread.run_sync(inspect_queue, directory)
                return not pending

            while not await settled():  # noqa: ASYNC110
                await trio.sleep(0.2)  # bounded (fail_after above): the consumer catches up
            final.process.send_signal(signal.SIGKILL)

    # Every returned send was delivered, with its payload, and acknowledged (none is pending).
    assert delivered() == everything
    redelivered = check(lives, {(p, s): n for p, s, n in sent})
    record(
        "queue_many_producers",
        {
            "producers": "4 processes, 4 threads, 1 asyncio task",
            "items_sent": len(sent),
            "consumer_sigkills": CONSUMER_KILLS,
            "lost": 0,
            "acked_items_delivered_again": 0,
            "delivered_again_after_a_kill_before_their_ack": redelivered,
        },
    )
