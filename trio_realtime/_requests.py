"""Requests waiting for their answers: the I/O half of the session's request ids."""

from __future__ import annotations

from collections.abc import Callable

import trio

from ._errors import RequestRefused
from ._protocol import Answer, Answered, ClientSession, Error, Request

__all__ = ["Requests"]


class Requests:
    """Waiters for the answers to requests the session sent. ``wake`` gets the writer going."""

    def __init__(self, session: ClientSession, wake: Callable[[], None]) -> None:
        self._session = session
        self._wake = wake
        self._waiting: dict[int, tuple[trio.Event, list[Answer]]] = {}

    async def wait(self, frame: Request | None, patience: float) -> Answer | None:
        """The answer to ``frame``; ``None`` if none was sent (``frame`` is ``None``), or none
        came within ``patience`` seconds or before the link went down. A refusal raises
        :class:`RequestRefused`."""
        if frame is None:
            await trio.lowlevel.checkpoint()
            return None
        done, answer = self._waiting[frame.rid] = (trio.Event(), [])
        self._wake()
        try:
            with trio.move_on_after(patience):
                await done.wait()
        finally:
            del self._waiting[frame.rid]
            self._session.forget(frame.rid)
        if answer and isinstance(answer[0], Error):
            refusal = answer[0]
            what = f"{type(frame).__name__} of {frame.channel!r}"
            raise RequestRefused(f"{what} refused: {refusal.code}: {refusal.message}", refusal.code)
        return answer[0] if answer else None

    def answered(self, event: Answered) -> None:
        waiter = self._waiting.get(event.rid)
        if waiter is not None:
            waiter[1].append(event.answer)
            waiter[0].set()

    def lost(self, rids: list[int]) -> None:
        """The link went down: these answers will not come."""
        for rid in rids:
            waiter = self._waiting.get(rid)
            if waiter is not None:
                waiter[0].set()
