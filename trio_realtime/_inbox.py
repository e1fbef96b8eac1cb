"""The inbox: hands a connection's messages and gaps to ``messages()`` streams, keeps what arrives
while nobody reads, and persists each channel's position as the application processes events."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

from ._errors import JournalClosed
from ._journal import Journal
from ._protocol import ChannelPosition, Gap, Message
from ._stream import Broadcast, Stream

__all__ = ["BACKLOG_LIMIT", "Inbox"]

#: Events kept for a later messages() iterator while none is running.
BACKLOG_LIMIT = 10_000


def _position(item: Message | Gap) -> tuple[str, str, int] | None:
    return (item.channel, item.epoch, item.offset) if isinstance(item, Message) else None


class Inbox:
    """``messages()`` for one connection. ``subscribed(channel)`` says whether a channel is still
    subscribed (a position is persisted only for those)."""

    def __init__(self, journal: Journal, subscribed: Callable[[str], bool]) -> None:
        self._journal = journal
        self._subscribed = subscribed
        self._streams = Broadcast[Message | Gap](buffer=1024, position=_position)
        self._backlog: list[Message | Gap] = []  # arrived while no matching stream was open
        self._backlog_room = trio.Event()

    def messages(self, channel: str | None = None) -> Stream[Message | Gap]:
        # Take the backlog and register in one step (no checkpoint): nothing slips in between.
        kept = [i for i in self._backlog if channel is None or i.channel == channel]
        self._backlog = [i for i in self._backlog if not (channel is None or i.channel == channel)]
        self._backlog_room.set()
        return self._streams.open(channel, kept, self._processed, self._committed)

    async def deliver(self, item: Message | Gap) -> None:
        """Hand ``item`` to the streams of its channel; keep it if none is open (waiting while
        :data:`BACKLOG_LIMIT` items are kept, which slows the server down for this client)."""
        if await self._streams.emit(item, item.channel):
            return
        while len(self._backlog) >= BACKLOG_LIMIT:
            self._backlog_room = trio.Event()
            await self._backlog_room.wait()
        self._backlog.append(item)

    async def starting_point(self, channel: str, position: ChannelPosition) -> None:
        """The server told where a subscription starts. Persist it only for a subscription the
        journal does not know yet (so a restart resumes it); otherwise the journal keeps what the
        application processed, which may be behind what arrived."""
        if channel in self._journal.cursors:
            await trio.lowlevel.checkpoint()
        else:
            await self._journal.set_cursor(channel, position.offset, position.epoch)

    def close(self) -> None:
        self._streams.close()

    async def _committed(self, item: Message | Gap) -> None:
        """``stream.commit()``: as :meth:`_processed`, and the position is written when it
        returns."""
        await self._processed(item, wait=True)

    async def _processed(self, item: Message | Gap, *, wait: bool = False) -> None:
        """The application asked for the next item after ``item``: persist ``item``'s channel
        position, so after a crash the server replays from the first event not processed. (The
        journal writes it with its next batch; ``wait``: before returning.)"""
        offset = item.offset if isinstance(item, Message) else item.last_missing
        if offset is None or not self._subscribed(item.channel):
            await trio.lowlevel.checkpoint()
            return
        cursor = self._journal.cursors.get(item.channel)
        if cursor is not None and cursor.epoch == item.epoch and cursor.offset >= offset:
            await trio.lowlevel.checkpoint()
            return
        # If the connection closed meanwhile, the event is simply delivered again next time.
        with contextlib.suppress(JournalClosed):
            await self._journal.set_cursor(item.channel, offset, item.epoch, wait=wait)
