"""The server side of the protocol as a sans-I/O state machine."""

from __future__ import annotations

import bisect
from collections.abc import Set

from .._errors import LocalProtocolError, RemoteProtocolError
from ._base import ProtocolBase
from ._close import CloseCode
from ._codec import decode_client_message
from ._events import DuplicateEvent, OutOfOrderEvent
from ._frames import (
    PROTOCOL_VERSION,
    Ack,
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
from ._state import Role

__all__ = ["ServerProtocol"]


class ServerProtocol(ProtocolBase[ServerFrame, ClientFrame]):
    """One server connection's protocol state.

    The upstream rules of PROTOCOL.md section 3, per connection, starting from the ``ack_seq`` the
    server sends in ``resume_response`` (read from its store for that ``client_id``):

    * ``seq <=`` the last seq received -> :class:`DuplicateEvent` (not to be published again; listed in
      the next ack's ``duplicates``);
    * ``seq ==`` last received + 1 -> the :class:`UpstreamEvent` itself: validate, store, publish
      (a :class:`Skip`: store nothing, but the seq is consumed; a duplicate skip is not listed);
    * ``seq >`` last received + 1 -> :class:`OutOfOrderEvent`; later events on the link are ignored.

    :meth:`ack` builds the cumulative ack once the store has committed; sending an :class:`Error` with
    ``seq`` rejects that event (it still counts as consumed, so acks move past it).
    """

    _role = Role.SERVER
    _peer = Role.CLIENT

    def __init__(self) -> None:
        super().__init__(decode_client_message)
        self.resume: Resume | None = None
        """The client's ``resume`` frame, once received."""
        self.ack_seq = 0
        """Highest seq acknowledged to this client."""
        self.received_seq = 0
        """Highest seq received in order (handed to the application, committed or not)."""
        self._duplicates: list[int] = []
        self._out_of_order = False
        self._requests: dict[int, Subscribe | Unsubscribe | ReceiptsQuery] = {}
        self._subscriptions: set[str] = set()

    @property
    def client_id(self) -> str | None:
        return self.resume.client_id if self.resume else None

    @property
    def subscriptions(self) -> Set[str]:
        """Channels this connection is subscribed to (as acknowledged by ``subscribed``)."""
        return self._subscriptions

    @property
    def pending_duplicates(self) -> tuple[int, ...]:
        """Seqs received as duplicates and not yet listed in an ack."""
        return tuple(self._duplicates)

    # --- receiving -------------------------------------------------------------------------------

    def _on_receive(self, frame: ClientFrame) -> None:
        if isinstance(frame, UpstreamEvent | Skip):
            self._on_upstream(frame)
            return
        if isinstance(frame, Resume):
            if frame.protocol != PROTOCOL_VERSION:
                raise RemoteProtocolError(
                    f"unsupported protocol version {frame.protocol}",
                    field="protocol",
                    close_code=CloseCode.UNSUPPORTED_PROTOCOL,
                )
            self.resume = frame
        elif isinstance(frame, Subscribe | Unsubscribe | ReceiptsQuery):
            if frame.rid in self._requests:
                self._fail(f"request id {frame.rid} is already in use", field="rid")
            self._requests[frame.rid] = frame
        self._events.append(frame)

    def _on_upstream(self, frame: UpstreamEvent | Skip) -> None:
        if self._out_of_order:
            return
        if frame.seq <= self.received_seq:
            if isinstance(frame, Skip):  # consumed already: nothing to say, nothing sent twice
                self._events.append(DuplicateEvent(frame.seq, None))
                return
            self._duplicates.append(frame.seq)
            self._events.append(DuplicateEvent(frame.seq, frame.idempotency_key))
        elif frame.seq == self.received_seq + 1:
            self.received_seq = frame.seq
            self._events.append(frame)
        else:
            self._out_of_order = True
            self._events.append(OutOfOrderEvent(frame.seq, self.received_seq + 1))

    def mark_duplicate(self, seq: int) -> None:
        """The event ``seq``, received in order, was not stored because the store already had it
        (stored through another connection of the client, or its caller key already used): the
        next ack lists it in ``duplicates``, as a retransmission would be."""
        if not self.ack_seq < seq <= self.received_seq:
            raise LocalProtocolError(f"seq {seq} is not pending", field="seq")
        if seq not in self._duplicates:
            bisect.insort(self._duplicates, seq)

    # --- sending ---------------------------------------------------------------------------------

    def ack(self, ack_seq: int | None = None) -> bytes:
        """The cumulative ack for everything up to ``ack_seq`` (default: all received), listing the
        duplicates received since the last ack. Call it only after the store has committed."""
        seq = self.received_seq if ack_seq is None else ack_seq
        return self.send(Ack(seq, tuple(d for d in self._duplicates if d <= seq)))

    def _on_send(self, frame: ServerFrame) -> None:
        if isinstance(frame, Ack):
            self._on_ack(frame)
        elif isinstance(frame, ResumeResponse):
            assert self.resume is not None  # the state table allows it only after resume
            if frame.client_id != self.resume.client_id:
                raise LocalProtocolError("resume_response for another client_id", field="client_id")
            self.ack_seq = self.received_seq = frame.ack_seq
            self._subscriptions.update(frame.channels)
        elif isinstance(frame, Error):
            if frame.seq is not None and not self.ack_seq < frame.seq <= self.received_seq:
                raise LocalProtocolError(
                    f"error for seq {frame.seq}, which is not pending", field="seq"
                )
            if frame.rid is not None:
                self._requests.pop(frame.rid, None)
        elif isinstance(frame, Subscribed | Unsubscribed | Receipts):
            self._on_answer(frame)
        elif isinstance(frame, Message) and frame.channel not in self._subscriptions:
            raise LocalProtocolError(f"not subscribed to {frame.channel!r}", field="channel")

    def _on_ack(self, frame: Ack) -> None:
        if not self.ack_seq <= frame.ack_seq <= self.received_seq:
            raise LocalProtocolError(
                f"ack_seq {frame.ack_seq} outside [{self.ack_seq}, {self.received_seq}]",
                field="ack_seq",
            )
        self.ack_seq = frame.ack_seq
        self._duplicates = [seq for seq in self._duplicates if seq > frame.ack_seq]

    def _on_answer(self, frame: Subscribed | Unsubscribed | Receipts) -> None:
        request = self._requests.pop(frame.rid, None)
        expected = {Subscribed: Subscribe, Unsubscribed: Unsubscribe, Receipts: ReceiptsQuery}
        if (
            request is None
            or not isinstance(request, expected[type(frame)])
            or request.channel != frame.channel
        ):
            raise LocalProtocolError(f"no pending request with rid {frame.rid}", field="rid")
        if isinstance(frame, Subscribed):
            self._subscriptions.add(frame.channel)
        elif isinstance(frame, Unsubscribed):
            self._subscriptions.discard(frame.channel)
