"""Shared test helpers: a list test doubles append to that can be waited on without polling,
collecting a channel's messages, and holding the journal's fsyncs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest
import trio

from trio_realtime import Message
from trio_realtime._journal._files import SegmentWriter

_T = TypeVar("_T")


class Watched(list[_T]):
    """A list whose appends wake :meth:`wait_until` (appends come from the trio thread)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def append(self, item: _T) -> None:
        super().append(item)
        self._wake()

    def extend(self, items: Iterable[_T]) -> None:
        super().extend(items)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool], within: float = 10) -> None:
        """Wait until ``condition()`` holds, checking it after each append; fail after
        ``within`` seconds (virtual ones under a MockClock)."""
        with trio.fail_after(within):
            while not condition():
                await self._changed.wait()


async def collect(conn: object, channel: str, count: int, within: float = 20) -> list[Message]:
    """The next ``count`` messages of ``channel`` (marked processed), or fail after ``within``."""
    got: list[Message] = []
    stream = conn.messages(channel)  # type: ignore[attr-defined]
    with trio.fail_after(within):
        async for item in stream:
            assert isinstance(item, Message), item
            got.append(item)
            if len(got) == count:
                await stream.commit()  # processed: not to be delivered again after a restart
                break
    return got


@contextmanager
def held_fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside the block, every journal fsync (group commit) waits in its worker thread until the
    block ends (at most 30 s), however it ends."""
    release = threading.Event()
    sync = SegmentWriter.sync

    def held_sync(writer: SegmentWriter) -> None:
        release.wait(30)
        sync(writer)

    monkeypatch.setattr(SegmentWriter, "sync", held_sync)
    try:
        yield
    finally:
        release.set()
