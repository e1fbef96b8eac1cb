"""Child processes for the queue tests: a producer and a consumer that report on a pipe.

python _workers.py produce DIRECTORY COUNT FD     ->  "s PRODUCER SEQ N" per returned send
python _workers.py consume DIRECTORY FD           ->  "d PRODUCER SEQ N" per delivery,
                                                      "a PRODUCER SEQ" per returned ack
"""

from __future__ import annotations

import os
import sys

import trio

from trio_realtime.queue import QueueProducer, open_queue

NAME = "work"


def say(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())


def produce(directory: str, count: int, fd: int) -> None:
    with QueueProducer(NAME, directory=directory) as producer:
        for n in range(count):
            seq = producer.send({"n": n})
            say(fd, f"s {producer.producer_id} {seq} {n}")


async def consume(directory: str, fd: int) -> None:
    async with open_queue(NAME, directory=directory, poll_interval=0.2) as queue:
        async for item in queue:
            say(fd, f"d {item.producer_id} {item.seq} {item.payload['n']}")
            await item.ack()
            say(fd, f"a {item.producer_id} {item.seq}")


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        trio.run(consume, sys.argv[2], int(sys.argv[3]))
