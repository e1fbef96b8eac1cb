"""Typing indicators (PROTOCOL.md section 5).

Sender side: ``set(channel, True)`` sends at most once per ``typing_refresh_interval``; sending an
event to the channel, or ``set(channel, False)``, ends it. Receiver side: a user's flag lasts
``typing_timeout`` unless refreshed, and ends at once when an event from that user arrives in the
channel or the server relays that the user stopped (or disconnected).
"""

from __future__ import annotations

import math
from typing import ClassVar

import trio

from .._errors import ConfigError
from .._protocol import Message, ServerFrame, Typing
from .._service import ConnectionState, Service
from .._stream import Broadcast, Stream
from ._common import check_channel

__all__ = ["TypingService"]


class TypingService(Service):
    """``conn.typing``."""

    name: ClassVar[str] = "typing"
    frames: ClassVar[tuple[type, ...]] = (Typing,)

    def __init__(self, *, timeout: float = 6.0, refresh_interval: float = 3.0) -> None:
        """``timeout``: another user's flag lasts this long (seconds) unless refreshed.
        ``refresh_interval``: ``set(channel, True)`` sends at most once per interval; it must be
        shorter than ``timeout``, or flags would expire between refreshes."""
        for option, value in (("timeout", timeout), ("refresh_interval", refresh_interval)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(option, f"must be a positive number of seconds, got {value!r}")
        if refresh_interval >= timeout:
            raise ConfigError(
                "refresh_interval",
                "must be shorter than timeout, or typing flags would expire between refreshes",
            )
        self.timeout = float(timeout)
        self.refresh_interval = float(refresh_interval)
        self._typists: dict[str, dict[str, float]] = {}  # channel -> user -> expiry (trio time)
        self._mine: dict[str, float] = {}  # channel -> when this client last said "typing"
        self._listeners = Broadcast[frozenset[str]]()
        self._changed = trio.Event()

    async def set(self, channel: str, typing: bool) -> None:
        """Say whether this client's user is typing in ``channel``. Call it on every keystroke if
        you like: a repeated ``True`` within ``typing_refresh_interval`` sends nothing."""
        check_channel(channel)
        if not isinstance(typing, bool):
            raise TypeError(f"typing must be a bool, got {typing!r}")
        connection = self.host
        connection.check_open()
        now = trio.current_time()
        if typing:
            last = self._mine.get(channel)
            if last is None or now - last >= self.refresh_interval:
                self._mine[channel] = now
                self._queue(Typing(channel, True))
        elif self._mine.pop(channel, None) is not None:
            self._queue(Typing(channel, False))
        await trio.lowlevel.checkpoint()

    def _queue(self, frame: Typing) -> None:
        if self.host.state is ConnectionState.CONNECTED:
            self.host.send_control(frame)

    def users(self, channel: str) -> frozenset[str]:
        """Who is typing in ``channel`` now (never this client's own user)."""
        return frozenset(self._typists.get(check_channel(channel), ()))

    def changes(self, channel: str) -> Stream[frozenset[str]]:
        """Iterate over who is typing in ``channel``: the current set at once, then the new set
        after each change, until the connection closes."""
        return self._listeners.open(check_channel(channel), [self.users(channel)])

    # --- hooks -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Expire flags that were not refreshed in time."""
        while True:
            deadline = min(
                (t for typists in self._typists.values() for t in typists.values()),
                default=math.inf,
            )
            with trio.move_on_at(deadline):
                await self._changed.wait()
            self._changed = trio.Event()
            now = trio.current_time()
            for channel, typists in list(self._typists.items()):
                expired = [user for user, expiry in typists.items() if expiry <= now]
                for user in expired:
                    self._stop(channel, user)

    def on_frame(self, frame: ServerFrame) -> None:
        assert isinstance(frame, Typing)
        if frame.user is None:
            return
        if frame.typing:
            typists = self._typists.setdefault(frame.channel, {})
            known = frame.user in typists
            typists[frame.user] = trio.current_time() + self.timeout
            self._changed.set()
            if not known:
                self._emit(frame.channel)
        else:
            self._stop(frame.channel, frame.user)

    def on_message(self, message: Message) -> None:
        if message.sender is not None:
            self._stop(message.channel, message.sender)

    def on_send(self, channel: str) -> None:
        self._mine.pop(channel, None)  # receivers clear the flag when the event reaches them

    def on_resumed(self) -> None:
        # The server forgot this client's flags with the old connection: say them again.
        now = trio.current_time()
        timeout = self.timeout
        for channel, last in list(self._mine.items()):
            if now - last < timeout:
                self._mine[channel] = now
                self.host.send_control(Typing(channel, True))
            else:
                del self._mine[channel]

    def close(self) -> None:
        self._listeners.close()

    def _stop(self, channel: str, user: str) -> None:
        typists = self._typists.get(channel)
        if typists is not None and typists.pop(user, None) is not None:
            if not typists:
                del self._typists[channel]
            self._emit(channel)

    def _emit(self, channel: str) -> None:
        self._listeners.emit_nowait(self.users(channel), channel)
