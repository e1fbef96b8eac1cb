"""The client side of the protocol as a sans-I/O state machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._errors import LocalProtocolError
from ._base import ProtocolBase
from ._codec import decode_server_message, join_encoded
from ._events import Gap
from ._frames import (
    Ack,
    ChannelPosition,
    ClientFrame,
    Error,
    Message,
    Receipts,
    ReceiptsQuery,
    Resume,
    ResumeResponse,
    ServerFrame,
    Skip,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
)
from ._state import TABLE, Role, State

__all__ = ["ClientProtocol"]


class ClientProtocol(ProtocolBase[ClientFrame, ServerFrame]):
    """One client connection's protocol state, from ``resume`` to close.

    Create one per connection (a reconnect makes a new one). It enforces, on what the client sends:
    ``resume`` first; upstream ``seq`` contiguous from ``resume_response.ack_seq + 1`` (a skipped seq
    would be a silent loss). On what it receives: acks never go backwards nor past what was sent,
    answers match a request id, and downstream events are deduplicated by offset per channel, with a
    :class:`Gap` event whenever continuity is lost.

    Events: the received frames, except downstream duplicates (dropped and counted in
    :attr:`duplicates_dropped`) and :class:`Gap` where history is missing.
    """

    _role = Role.CLIENT
    _peer = Role.SERVER

    def __init__(self) -> None:
        super().__init__(decode_server_message)
        self.ack_seq = 0
        """Highest upstream seq the server has acknowledged on this connection."""
        self.session: ResumeResponse | None = None
        """The server's ``resume_response``, once received."""
        self.duplicates_dropped = 0
        """Downstream events dropped because their offset was already processed."""
        self._next_seq = 0  # next upstream seq this connection may send (0: not known yet)
        self._cursors: dict[str, ChannelPosition] = {}
        self._requests: dict[int, Subscribe | Unsubscribe | ReceiptsQuery] = {}

    @property
    def next_seq(self) -> int:
        """The seq the next upstream event must carry (known once ``resume_response`` arrived)."""
        return self._next_seq

    @property
    def cursors(self) -> Mapping[str, ChannelPosition]:
        """Per subscribed channel, the last offset processed and its epoch."""
        return self._cursors

    # --- sending ---------------------------------------------------------------------------------

    def send_encoded(self, entries: Sequence[tuple[int, bytes]]) -> bytes:
        """Send upstream events already encoded by :func:`encode_frame`, given as ``(seq, bytes)``
        in order, as one message. Checks the state and seq contiguity like :meth:`send`, without
        encoding the events again (the outbox journaled these exact bytes)."""
        if UpstreamEvent not in TABLE[self._role, self._state]:
            message = f"cannot send UpstreamEvent in state {self._state.value}"
            self._state = State.CLOSED
            raise LocalProtocolError(message)
        for seq, _ in entries:
            if seq != self._next_seq:
                self._state = State.CLOSED
                raise LocalProtocolError(
                    f"upstream seq {seq} sent where {self._next_seq} is next", field="seq"
                )
            self._next_seq += 1
        return join_encoded([data for _, data in entries])

    def _on_send(self, frame: ClientFrame) -> None:
        if isinstance(frame, UpstreamEvent | Skip):
            if frame.seq != self._next_seq:
                raise LocalProtocolError(
                    f"upstream seq {frame.seq} sent where {self._next_seq} is next", field="seq"
                )
            self._next_seq += 1
        elif isinstance(frame, Resume):
            self._cursors = dict(frame.channels)
        elif isinstance(frame, Subscribe | Unsubscribe | ReceiptsQuery):
            if frame.rid in self._requests:
                raise LocalProtocolError(f"request id {frame.rid} is already in use", field="rid")
            self._requests[frame.rid] = frame

    # --- receiving -------------------------------------------------------------------------------

    def _on_receive(self, frame: ServerFrame) -> None:
        if isinstance(frame, Message):
            self._on_downstream(frame)
            return
        if isinstance(frame, Ack):
            self._on_ack(frame)
        elif isinstance(frame, ResumeResponse):
            self._on_resume_response(frame)
        elif isinstance(frame, Error):
            self._on_error(frame)
        elif isinstance(frame, Subscribed | Unsubscribed | Receipts):
            self._on_answer(frame)
        self._events.append(frame)

    def _on_resume_response(self, frame: ResumeResponse) -> None:
        self.session = frame
        self.ack_seq = frame.ack_seq
        self._next_seq = frame.ack_seq + 1
        for name, position in list(self._cursors.items()):
            answer = frame.channels.get(name)
            if answer is None:
                self._fail("resume_response lacks a channel the client resumed", field="channels")
            self._restore(name, position, answer.epoch, answer.offset, answer.recovered)

    def _restore(
        self, name: str, asked: ChannelPosition | None, epoch: str, head: int, recovered: bool
    ) -> None:
        """Set a channel's cursor from the server's answer; report lost history as a gap."""
        if recovered and asked is not None:
            if asked.epoch is not None and asked.epoch != epoch:
                self._fail("recovered under another epoch", field="epoch")
            self._cursors[name] = ChannelPosition(asked.offset, epoch)
            return
        self._cursors[name] = ChannelPosition(head, epoch)
        if not recovered and asked is not None:
            # Offsets of another epoch say nothing about this one: then all of it up to head is lost.
            first = asked.offset + 1 if asked.epoch == epoch else 1
            self._events.append(Gap(name, epoch, first, head if first <= head else None))

    def _on_ack(self, frame: Ack) -> None:
        sent = self._next_seq - 1
        if frame.ack_seq > sent:
            self._fail(
                f"ack_seq {frame.ack_seq} beyond the last seq sent ({sent})", field="ack_seq"
            )
        if frame.ack_seq < self.ack_seq:
            self._fail(f"ack_seq went back from {self.ack_seq} to {frame.ack_seq}", field="ack_seq")
        self.ack_seq = frame.ack_seq

    def _on_error(self, frame: Error) -> None:
        if frame.seq is not None and frame.seq >= self._next_seq:
            self._fail(f"error for seq {frame.seq}, which was never sent", field="seq")
        if frame.rid is not None:
            self._requests.pop(frame.rid, None)

    def _on_answer(self, frame: Subscribed | Unsubscribed | Receipts) -> None:
        request = self._requests.pop(frame.rid, None)
        expected = {Subscribed: Subscribe, Unsubscribed: Unsubscribe, Receipts: ReceiptsQuery}
        if (
            request is None
            or not isinstance(request, expected[type(frame)])
            or request.channel != frame.channel
        ):
            self._fail(
                f"{type(frame).__name__} answers no request with rid {frame.rid}", field="rid"
            )
        if isinstance(frame, Subscribed):
            assert isinstance(request, Subscribe)
            asked = None
            if request.offset is not None:
                asked = ChannelPosition(request.offset, request.epoch)
            self._restore(frame.channel, asked, frame.epoch, frame.offset, frame.recovered)
        elif isinstance(frame, Unsubscribed):
            self._cursors.pop(frame.channel, None)

    def _on_downstream(self, frame: Message) -> None:
        cursor = self._cursors.get(frame.channel)
        if cursor is None:
            # Not subscribed (any more): a late event after an unsubscribe. Nothing to deliver.
            self.duplicates_dropped += 1
            return
        if cursor.epoch == frame.epoch:
            if frame.offset <= cursor.offset:
                self.duplicates_dropped += 1
                return
            if frame.offset > cursor.offset + 1:
                self._events.append(
                    Gap(frame.channel, frame.epoch, cursor.offset + 1, frame.offset - 1)
                )
        elif frame.offset > 1:
            # The log's continuity was lost (new epoch) and this is not its first event.
            self._events.append(Gap(frame.channel, frame.epoch, 1, frame.offset - 1))
        self._cursors[frame.channel] = ChannelPosition(frame.offset, frame.epoch)
        self._events.append(frame)
