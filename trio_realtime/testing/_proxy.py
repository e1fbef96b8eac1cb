"""FaultProxy: a TCP proxy between a client and a server that misbehaves on demand.

Every fault is an attribute you may change at any time while the proxy runs; new values apply to
the bytes forwarded from then on (and to connections already open).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

__all__ = ["FaultProxy", "ProxyStats", "open_fault_proxy"]


@attrs.define
class ProxyStats:
    connections: int = 0
    """Connections accepted."""
    resets: int = 0
    """Connections reset by a fault (``reset_*``)."""
    bytes_forwarded: int = 0
    bytes_dropped: int = 0
    """Bytes swallowed by the black hole."""


class _Pair:
    """One proxied connection: the client's stream, the server's, and a scope to end both."""

    def __init__(self, client: trio.SocketStream, server: trio.SocketStream) -> None:
        self.client = client
        self.server = server
        self.scope = trio.CancelScope()
        self.forwarded = 0
        self.dead = False  # black-holed once: stays dead (TCP never skips bytes and goes on)

    def reset(self) -> None:
        """End both sides with a TCP RST (no FIN): what a crashed peer or a middlebox does."""
        for stream in (self.client, self.server):
            with contextlib.suppress(OSError):
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.scope.cancel()


class FaultProxy:
    """Forwards TCP connections from ``port`` (on loopback) to ``target``.

    Faults, all off by default:

    * ``latency`` / ``jitter`` (seconds): each chunk is delayed by ``latency`` plus a random part of
      ``jitter``; order is kept.
    * ``bandwidth`` (bytes per second, each direction of each connection).
    * ``reset_after_bytes``: reset a connection once it has forwarded this many bytes.
    * ``reset_every`` (seconds): reset every open connection this often.
    * ``blackhole``: forward nothing and close nothing (bytes are swallowed): a dead link that looks
      alive. A connection that lost bytes to the black hole stays dead after it is lifted (TCP
      never delivers later bytes without the earlier ones); new connections work again.
    * ``slow_close`` (seconds): wait this long before passing a close on.
    * ``chunk_size``: slice what is forwarded into writes of at most this many bytes.
    * ``refuse``: reset new connections at once.

    Use :func:`open_fault_proxy`; :meth:`reset_all` resets the open connections now.
    """

    def __init__(self, target_host: str, target_port: int, *, seed: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.latency = 0.0
        self.jitter = 0.0
        self.bandwidth: float | None = None
        self.reset_after_bytes: int | None = None
        self.reset_every: float | None = None
        self.blackhole = False
        self.slow_close = 0.0
        self.chunk_size: int | None = None
        self.refuse = False
        self.stats = ProxyStats()
        self._pairs: set[_Pair] = set()
        self._random = random.Random(seed)
        self._settings_changed = trio.Event()

    def __repr__(self) -> str:
        return f"<FaultProxy :{self.port} -> {self.target[0]}:{self.target[1]} {len(self._pairs)} open>"

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def clear_faults(self) -> None:
        """Back to a well-behaved proxy."""
        self.latency = self.jitter = self.slow_close = 0.0
        self.bandwidth = self.reset_after_bytes = self.reset_every = self.chunk_size = None
        self.blackhole = self.refuse = False
        self.changed()

    def changed(self) -> None:
        """Tell the proxy a setting changed (``reset_every`` is re-read at once)."""
        self._settings_changed.set()

    def reset_all(self) -> int:
        """Reset every open connection now; returns how many."""
        pairs = list(self._pairs)
        for pair in pairs:
            pair.reset()
        self.stats.resets += len(pairs)
        return len(pairs)

    async def _serve(self, client: trio.SocketStream) -> None:
        self.stats.connections += 1
        if self.refuse:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()
            return
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()
            return
        pair = _Pair(client, server)
        self._pairs.add(pair)
        try:
            with pair.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, pair, client, server)
                    nursery.start_soon(self._pump, pair, server, client)
        finally:
            self._pairs.discard(pair)
            with trio.CancelScope(shield=True):
                await client.aclose()
                await server.aclose()

    async def _pump(self, pair: _Pair, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def deliver() -> None:
            free_at = 0.0  # under a bandwidth limit: when the link is free for the next byte
            async for due, data in receive:
                await trio.sleep_until(due)
                if not data:  # end of stream
                    await trio.sleep(self.slow_close)
                    with contextlib.suppress(
                        trio.BrokenResourceError, trio.ClosedResourceError, OSError
                    ):
                        await sink.send_eof()
                    return
                size = self.chunk_size or len(data)
                if self.bandwidth:  # pace in slices of 20 ms worth of bytes
                    size = min(size, max(1, int(self.bandwidth / 50)))
                for start in range(0, len(data), size):
                    piece = data[start : start + size]
                    if self.bandwidth:
                        free_at = max(free_at, trio.current_time())
                        await trio.sleep_until(free_at)
                        free_at += len(piece) / self.bandwidth
                    try:
                        await sink.send_all(piece)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pair.scope.cancel()
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            last_due = 0.0
            while True:
                try:
                    data = await source.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pair.scope.cancel()
                    return
                if data and (self.blackhole or pair.dead):
                    pair.dead = True
                    self.stats.bytes_dropped += len(data)
                    continue
                delay = self.latency + (self._random.random() * self.jitter if self.jitter else 0)
                last_due = max(last_due, trio.current_time() + delay)  # jitter never reorders
                send.send_nowait((last_due, data))
                if not data:
                    return
                pair.forwarded += len(data)
                self.stats.bytes_forwarded += len(data)
                limit = self.reset_after_bytes
                if limit is not None and pair.forwarded >= limit:
                    self.stats.resets += 1
                    pair.reset()
                    return

    async def _periodic_resets(self) -> None:
        while True:
            self._settings_changed = trio.Event()
            every = self.reset_every
            with trio.move_on_after(every if every else math.inf):
                await self._settings_changed.wait()
                continue
            self.reset_all()

    async def run(
        self, *, task_status: trio.TaskStatus[FaultProxy] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1")
            )
            self.port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(self._periodic_resets)
            task_status.started(self)


@asynccontextmanager
async def open_fault_proxy(
    target_port: int, target_host: str = "127.0.0.1", *, seed: int | None = None
) -> AsyncIterator[FaultProxy]:
    """Run a :class:`FaultProxy` to ``target_host:target_port`` for the block::

    async with open_fault_proxy(server.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/realtime"
        proxy.reset_every = 0.25
    """
    async with trio.open_nursery() as nursery:
        proxy: FaultProxy = await nursery.start(FaultProxy(target_host, target_port, seed=seed).run)
        yield proxy
        nursery.cancel_scope.cancel()
