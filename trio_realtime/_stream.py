"""Streams the application iterates over, and the one broadcast that feeds them all.

A :class:`Broadcast` hands each item to every open :class:`Stream` that wants it: acks, connection
states, messages, and the change streams of services (presence, typing, receipts) are all one.
A stream may want every item (key ``None``) or only those emitted under one key (a channel).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

import attrs
import trio

__all__ = ["Broadcast", "Stream"]

_T = TypeVar("_T")


class Stream(Generic[_T]):
    """An async iterator over a connection's messages, states or changes (``async for x in s``).

    Not an async generator, so leaving a loop early needs no ``aclosing``: the stream stops
    receiving as soon as it is closed (``aclose()``, ``async with``) or garbage collected.
    """

    def __init__(
        self,
        receive: trio.MemoryReceiveChannel[_T],
        first: Iterable[_T] = (),
        on_next: Callable[[_T], Awaitable[None]] | None = None,
        on_commit: Callable[[_T], Awaitable[None]] | None = None,
    ) -> None:
        self._receive = receive
        self._first = list(first)
        self._on_next = on_next
        self._on_commit = on_commit or on_next
        self._taken: _T | None = None

    def __aiter__(self) -> Stream[_T]:
        return self

    async def __anext__(self) -> _T:
        if self._taken is not None and self._on_next is not None:
            # Asking for the next item means the one taken before is processed.
            taken, self._taken = self._taken, None
            await self._on_next(taken)
        if self._first:
            await trio.lowlevel.checkpoint()
            item = self._first.pop(0)
        else:
            try:
                item = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StopAsyncIteration from None
        self._taken = item
        return item

    async def commit(self) -> None:
        """Say the item taken last is processed now, without asking for the next one (for
        ``messages()`` streams this persists the channel position at once: do it before a
        planned shutdown so the last message is not delivered again by the next process)."""
        if self._taken is not None and self._on_commit is not None:
            taken, self._taken = self._taken, None
            await self._on_commit(taken)
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self._receive.aclose()

    async def __aenter__(self) -> Stream[_T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self._receive.close()


@attrs.define(eq=False)
class _Listener(Generic[_T]):
    key: str | None
    send: trio.MemorySendChannel[_T]
    given: dict[str, tuple[str, int]] = attrs.Factory(dict)  # key -> (epoch, offset) given


class Broadcast(Generic[_T]):
    """Hands items to the open streams that want them.

    ``buffer``: how many items a stream holds for its reader (``math.inf``: all; changes are
    small and rare). With a finite buffer, :meth:`emit` waits for room (back-pressure); with
    ``math.inf``, :meth:`emit_nowait` never waits.

    ``position``: for items that carry a position in an ordered log (``(key, epoch, offset)``),
    a stream is never given an item at or before one it was given already, so an emit repeated
    after an interrupted one (a link dropped mid-hand-over) reaches only those that missed it.
    """

    def __init__(
        self,
        *,
        buffer: float = math.inf,
        position: Callable[[_T], tuple[str, str, int] | None] | None = None,
    ) -> None:
        self._buffer = buffer
        self._position = position
        self._listeners: list[_Listener[_T]] = []
        self._closed = False

    def open(
        self,
        key: str | None = None,
        first: Iterable[_T] = (),
        on_next: Callable[[_T], Awaitable[None]] | None = None,
        on_commit: Callable[[_T], Awaitable[None]] | None = None,
    ) -> Stream[_T]:
        """A stream of the items emitted from now on under ``key`` (``None``: every item),
        after ``first``. Once the broadcast is closed, the stream ends after ``first``."""
        send, receive = trio.open_memory_channel[_T](self._buffer)
        if self._closed:
            send.close()
        else:
            self._listeners.append(_Listener(key, send))
        return Stream(receive, first, on_next, on_commit)

    @property
    def has_streams(self) -> bool:
        """Whether a stream may still be open (one closed by its reader counts until the next
        emit finds it closed): emitting to none makes no item worth making."""
        return bool(self._listeners)

    def emit_nowait(self, item: _T, key: str | None = None) -> bool:
        """Give ``item`` to every stream that wants it, without waiting (their buffers must be
        unbounded). Returns whether any stream took it."""
        taken = False
        for entry in self._wanting(key):
            try:
                entry.send.send_nowait(item)
                taken = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._drop(entry)
        return taken

    async def emit(self, item: _T, key: str | None = None) -> bool:
        """Give ``item`` to every stream that wants it, waiting for room in each. Returns
        whether any stream has it (now, or from an earlier emit)."""
        position = self._position(item) if self._position is not None else None
        taken = False
        for entry in self._wanting(key):
            if position is not None:
                given = entry.given.get(position[0])
                if given is not None and given[0] == position[1] and position[2] <= given[1]:
                    taken = True  # given before an interrupted hand-over
                    continue
            try:
                await entry.send.send(item)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._drop(entry)
                continue
            taken = True
            if position is not None:
                entry.given[position[0]] = (position[1], position[2])
        return taken

    def close(self) -> None:
        """End every stream (after what their buffers hold); later streams end at once."""
        self._closed = True
        for entry in self._listeners:
            entry.send.close()
        self._listeners.clear()

    def _wanting(self, key: str | None) -> list[_Listener[_T]]:
        return [e for e in self._listeners if e.key is None or e.key == key]

    def _drop(self, entry: _Listener[_T]) -> None:
        if entry in self._listeners:
            self._listeners.remove(entry)
