"""trio_realtime.queue: worker threads hand results to the trio main loop through a durable queue.

The workers send whether or not the consumer runs; every result is on disk before send()
returns, and comes back after a crash until the main loop acknowledges it.

Run it: python examples/queue_worker.py
"""

from __future__ import annotations

import tempfile
import threading

import attrs
import trio

from trio_realtime.queue import QueueProducer, open_queue


@attrs.define
class Thumbnail:
    image: str
    width: int


def worker(directory: str, images: list[str]) -> None:
    """A plain thread (no event loop): make thumbnails, send each one."""
    with QueueProducer("thumbnails", directory=directory) as producer:
        for image in images:
            producer.send(Thumbnail(image, 128))  # returns once it is on disk


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:  # default: found by name in ~/.local/share
        # A worker that ran while the main loop was not running: its results wait on disk.
        worker(directory, ["early.png"])

        async with open_queue("thumbnails", directory=directory, types=[Thumbnail]) as queue:
            print("waiting from before:", queue.pending_count)
            threads = [
                threading.Thread(
                    target=worker, args=(directory, [f"{w}-{i}.png" for i in range(3)])
                )
                for w in ("a", "b")
            ]
            for thread in threads:
                thread.start()
            done = 0
            async for item in queue:
                thumbnail: Thumbnail = item.payload  # a Thumbnail again (types=[Thumbnail])
                print(f"{thumbnail.image} from {item.producer_id[-8:]} #{item.seq}")
                await item.ack()  # never delivered again
                done += 1
                if done == 7:
                    break
            for thread in threads:
                thread.join()
            print("pending now:", queue.pending_count)


if __name__ == "__main__":
    trio.run(main)
