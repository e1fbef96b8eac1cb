"""What the services share: per-channel change streams and argument checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Generic, TypeVar

import trio

from .._connection import Stream

_T = TypeVar("_T")


def check_channel(channel: object) -> str:
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"channel must be a non-empty string, got {channel!r}")
    return channel


def check_offset(offset: object) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
    return offset


class ChannelListeners(Generic[_T]):
    """The open ``changes(channel)`` streams of a service.

    Streams buffer what their reader has not taken yet (changes are small and rare next to
    messages); close a stream (``async with``, ``aclose()``, or drop it) when you stop reading.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[trio.MemorySendChannel[_T]]] = {}
        self._closed = False

    def open(self, channel: str, first: Sequence[_T] = ()) -> Stream[_T]:
        send, receive = trio.open_memory_channel[_T](math.inf)
        if self._closed:
            send.close()
        else:
            self._listeners.setdefault(channel, []).append(send)
        return Stream(receive, list(first))

    def emit(self, channel: str, item: _T) -> None:
        listeners = self._listeners.get(channel, [])
        for listener in list(listeners):
            try:
                listener.send_nowait(item)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                listeners.remove(listener)

    def close(self) -> None:
        self._closed = True
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.close()
        self._listeners.clear()
