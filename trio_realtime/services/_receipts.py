"""Read receipts (PROTOCOL.md section 5).

A receipt is a watermark: "``user`` has read ``channel`` up to ``offset``". It never moves
backwards, and the server persists it. This service keeps what it learns of every reader (from
``get_receipts`` answers and the receipts the server relays to subscribers) so ``has_user_read``
answers without a round trip, and re-sends this client's own watermarks after every resume, so a
``mark_read`` made offline or just before a link drop is not lost while the process lives.
"""

from __future__ import annotations

import contextlib
import functools
from typing import ClassVar

import attrs
import trio

from .._errors import RealtimeError, RequestRefused
from .._protocol import ReadReceipt, Receipts, ReceiptsQuery, ServerFrame
from .._service import ConnectionState, Service
from .._stream import Broadcast, Stream
from ._common import check_channel, check_offset

__all__ = ["ReceiptUpdate", "ReceiptsService"]


@attrs.frozen
class ReceiptUpdate:
    """``user`` has read ``channel`` up to ``offset`` (inclusive)."""

    channel: str
    user: str
    offset: int


class ReceiptsService(Service):
    """``conn.receipts``."""

    name: ClassVar[str] = "receipts"
    frames: ClassVar[tuple[type, ...]] = (ReadReceipt, Receipts)

    def __init__(self) -> None:
        self._mine: dict[str, int] = {}  # channel -> this client's watermark
        self._readers: dict[str, dict[str, int]] = {}  # channel -> user -> watermark
        self._listeners = Broadcast[ReceiptUpdate]()
        self._resumed = trio.Event()

    async def mark_read(self, channel: str, offset: int) -> None:
        """Mark ``channel`` read up to ``offset`` (a :attr:`Message.offset`). A lower or equal
        offset than already marked changes nothing. Sent at once when connected, else after the
        next resume; the server keeps it and tells the channel's subscribers."""
        check_channel(channel)
        check_offset(offset)
        self.host.check_open()
        if offset > self._mine.get(channel, 0):
            self._mine[channel] = offset
            if self.host.state is ConnectionState.CONNECTED:
                self.host.send_control(ReadReceipt(channel, offset))
        await trio.lowlevel.checkpoint()

    async def get_receipts(self, channel: str, offset: int) -> set[str]:
        """Ask the server who has read ``channel`` up to ``offset`` or beyond. Waits for the
        connection if it is down; raises :class:`RequestRefused` if the server refuses (not
        allowed in the channel), :class:`ConnectionFailed` if the connection fails first."""
        check_channel(channel)
        check_offset(offset)
        connection = self.host
        while True:
            await connection.wait_connected()
            answer = await connection.request(functools.partial(_query, channel=channel))
            if isinstance(answer, Receipts):
                return {user for user, read in answer.readers.items() if read >= offset}
            if connection.state is ConnectionState.CONNECTED:
                raise RealtimeError(f"no answer to the receipts query for {channel!r} in time")

    def has_user_read(self, channel: str, offset: int, user: str) -> bool:
        """Whether ``user`` has read ``channel`` up to ``offset``, from what this client has
        heard: receipts relayed since it subscribed, and ``get_receipts`` answers."""
        check_channel(channel)
        check_offset(offset)
        return self._readers.get(channel, {}).get(user, 0) >= offset

    def watermark(self, channel: str) -> int:
        """The offset this client last marked read in ``channel`` (0: none)."""
        return self._mine.get(check_channel(channel), 0)

    def changes(self, channel: str) -> Stream[ReceiptUpdate]:
        """Iterate over receipts as readers move forward in ``channel``, until the connection
        closes."""
        return self._listeners.open(check_channel(channel))

    # --- hooks -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """After each resume, ask again for the channels this client knows receipts of: the
        server relayed none while the link was down."""
        connection = self.host
        while True:
            await self._resumed.wait()
            self._resumed = trio.Event()
            for channel in list(self._readers):
                with contextlib.suppress(RequestRefused):
                    await connection.request(functools.partial(_query, channel=channel))

    def on_frame(self, frame: ServerFrame) -> None:
        if isinstance(frame, ReadReceipt) and frame.user is not None:
            self._learn(frame.channel, frame.user, frame.offset)
        elif isinstance(frame, Receipts):
            for user, offset in frame.readers.items():
                self._learn(frame.channel, user, offset)

    def _learn(self, channel: str, user: str, offset: int) -> None:
        readers = self._readers.setdefault(channel, {})
        if offset > readers.get(user, 0):
            readers[user] = offset
            self._listeners.emit_nowait(ReceiptUpdate(channel, user, offset), channel)

    def on_resumed(self) -> None:
        for channel, offset in self._mine.items():
            self.host.send_control(ReadReceipt(channel, offset))
        self._resumed.set()

    def close(self) -> None:
        self._listeners.close()


def _query(rid: int, *, channel: str) -> ReceiptsQuery:
    return ReceiptsQuery(rid, channel)
