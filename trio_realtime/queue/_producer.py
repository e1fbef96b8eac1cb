"""QueueProducer: durable sends from threads, processes, asyncio or trio, consumer running or not."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import threading
import time
from typing import Any

# anyio, not trio: asend() is documented (docs/queue.md) and tested
# (tests/queue/test_many_producers.py) to work under asyncio as well as trio, and anyio's
# to_thread.run_sync runs on whichever of the two is running.
import anyio.to_thread

from .._journal import acquire_lock, create_segment_log, encode_append, release_lock
from ._common import encode_item, queue_directory, runtime_socket

__all__ = ["QueueProducer"]

#: Producer journals roll to a new segment at this size (acked segments are deleted whole).
SEGMENT_BYTES = 4 * 1024 * 1024


class QueueProducer:
    """Sends items to the queue ``name`` (found by name: no port or path to pass around).

    Each producer writes its own journal under the queue's directory, so producers never wait for
    each other or for the consumer, which may be stopped. :meth:`send` returns once the item is
    on disk (fsynced; concurrent sends from several threads share one fsync) and wakes the
    consumer if it runs. Items of one producer reach the consumer in the order they were sent.

    Thread-safe. From async code (asyncio or trio) use ``await producer.asend(obj)``, which runs
    the send in a worker thread. Close it (or use ``with``) when done.

    ``sync=False`` skips the fsync (an item survives the producer's crash, not the machine's);
    ``segment_bytes``: the journal rolls to a new file at this size, and the consumer deletes a
    file once every item in it is acknowledged.
    """

    def __init__(
        self,
        name: str,
        *,
        directory: str | os.PathLike[str] | None = None,
        sync: bool = True,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.name = name
        self.directory = queue_directory(name, directory)
        self.producer_id = f"{int(time.time() * 1000):013d}-{os.getpid()}-{secrets.token_hex(4)}"
        own = os.path.join(self.directory, "producers", self.producer_id)
        self._lock_fd = acquire_lock(own)
        self._writer = create_segment_log(own, segment_bytes=segment_bytes, sync=sync)
        self._socket_path = runtime_socket(self.directory)
        self._wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._wake.setblocking(False)
        self._cond = threading.Condition()
        self._written = 0  # last seq written
        self._synced = 0  # last seq known on disk
        self._syncing = False
        self._closed = False

    @property
    def last_seq(self) -> int:
        """Seq of the last item sent (1 for the first)."""
        return self._written

    def send(self, obj: Any) -> int:
        """Persist ``obj`` (bytes, an attrs instance or a JSON-able value) and return its seq,
        once it is on disk."""
        body = encode_item(obj, time.time())
        with self._cond:
            if self._closed:
                raise RuntimeError("this QueueProducer is closed")
            seq = self._written + 1
            record = encode_append(seq, body)
            while self._syncing and not self._writer.fits(len(record)):
                self._cond.wait()  # a roll closes the segment an fsync in flight is using
            self._writer.write([(seq, record)])
            self._written = seq
            while self._synced < seq:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing, target = True, self._written
                self._cond.release()
                try:
                    self._writer.sync()
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self._synced = max(self._synced, target)
        self._notify()
        return seq

    async def asend(self, obj: Any) -> int:
        """:meth:`send` from asyncio or trio (through anyio), in a worker thread."""
        return await anyio.to_thread.run_sync(self.send, obj)

    def _notify(self) -> None:
        """Wake the consumer; a consumer that is not running (or crashed) is simply not woken:
        it reads everything when it starts."""
        try:
            self._wake.sendto(b"!", self._socket_path)
        except OSError as exc:  # no consumer, a stale endpoint, or its buffer is full
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.ENOTSOCK):
                raise

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            self._wake.close()
            release_lock(self._lock_fd)

    def __enter__(self) -> QueueProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
