"""A durable local queue: many producers (threads, processes, asyncio or trio code) to one
consumer, each item replayed until the consumer acknowledges it.

    # anywhere, consumer running or not
    with QueueProducer("jobs") as producer:
        producer.send({"resize": "cat.png"})      # returns once it is on disk

    # the consumer, in trio
    async with open_queue("jobs") as queue:
        async for item in queue:
            handle(item.payload)
            await item.ack()

The Python counterpart of the Cross Isolate Messenger (see docs/queue.md).
"""

from __future__ import annotations

from ._common import queue_directory as queue_directory
from ._consumer import PersistentQueue as PersistentQueue
from ._consumer import QueueItem as QueueItem
from ._consumer import open_queue as open_queue
from ._producer import QueueProducer as QueueProducer

__all__ = ["PersistentQueue", "QueueItem", "QueueProducer", "open_queue", "queue_directory"]
