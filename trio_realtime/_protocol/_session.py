"""The client's protocol session as a sans-I/O object: what outlives one link.

A :class:`ClientSession` lives as long as a client connection, across reconnects. It owns the
subscriptions and each channel's position (the one place it is kept; the journal only persists
it), allocates request ids and matches answers to them, queues control frames for the writer,
and turns what the server sends into *user-level* events for the I/O layer:

* :class:`~trio_realtime.Message` and :class:`~trio_realtime.Gap`: hand them to the application,
  then call :meth:`ClientSession.delivered` for each message;
* :class:`Ack` (the frame) and :class:`SendRefused`: outcomes of upstream events;
* :class:`SessionStarted`, :class:`SubscriptionStarted`: the server's answer to ``resume`` and
  where each subscription starts;
* :class:`Answered`: the answer to a request made with :meth:`ClientSession.request`;
* :class:`MustClose`: the link must be closed with ``code`` (a fatal error, or a protocol error
  by the server);
* :class:`ServerNotice`: a non-fatal error no request or event is waiting for;
* any other frame (presence, typing, receipts, kinds registered by services) as it is.

Each link gets a fresh :class:`ClientProtocol` inside (:meth:`ClientSession.start_link`), which
checks the frames both ways. No clocks, no tasks, no I/O: the connection's link tasks drive it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from .._errors import RemoteProtocolError
from ._client import ClientProtocol
from ._close import fatal_close_code
from ._frames import (
    ChannelPosition,
    ClientFrame,
    Error,
    Message,
    Ping,
    Receipts,
    ReceiptsQuery,
    Resume,
    ResumeResponse,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)

__all__ = [
    "Answer",
    "Answered",
    "ClientSession",
    "MustClose",
    "Request",
    "SendRefused",
    "ServerNotice",
    "SessionStarted",
    "SubscriptionStarted",
]

#: A request frame: it carries a request id (``rid``) the server's answer repeats.
Request = Subscribe | Unsubscribe | ReceiptsQuery
#: What answers a request: the matching frame, or a non-fatal ``error`` carrying its ``rid``.
Answer = Subscribed | Unsubscribed | Receipts | Error


@attrs.frozen
class SessionStarted:
    """The server answered ``resume``: events flow both ways. ``ack_seq`` is the highest upstream
    seq it has (retransmit from the next); ``max_frame_bytes`` its limit on one message."""

    ack_seq: int
    max_frame_bytes: int


@attrs.frozen
class SubscriptionStarted:
    """The server said where ``channel``'s events continue (after a resume or a subscribe)."""

    channel: str
    position: ChannelPosition


@attrs.frozen
class SendRefused:
    """The server refused upstream event ``seq`` for good (a non-fatal ``error``)."""

    seq: int
    code: str
    message: str


@attrs.frozen
class Answered:
    """The answer to request ``rid`` (see :meth:`ClientSession.request`)."""

    rid: int
    answer: Answer


@attrs.frozen
class MustClose:
    """The link must be closed with ``code``: the server sent a fatal error (its close carries
    the same meaning), or broke the protocol (4000)."""

    code: int
    reason: str


@attrs.frozen
class ServerNotice:
    """A non-fatal ``error`` that answers nothing this session waits for."""

    code: str
    message: str


class ClientSession:
    """A client's protocol state across links (see the module docstring).

    ``positions`` seeds the subscriptions (from the journal: channel -> last processed position).
    """

    def __init__(self, positions: Mapping[str, ChannelPosition] = {}) -> None:
        self._positions: dict[str, ChannelPosition | None] = dict(positions)
        self._next_rid = 1
        self._awaited: set[int] = set()
        self._control: list[ClientFrame] = []
        self._proto: ClientProtocol | None = None
        self._open = False

    # --- subscriptions ---------------------------------------------------------------------------

    def restore(self, positions: Mapping[str, ChannelPosition]) -> None:
        """Seed the subscriptions from what the journal persisted (before the first link)."""
        self._positions.clear()
        self._positions.update(positions)

    @property
    def positions(self) -> Mapping[str, ChannelPosition | None]:
        """Per subscribed channel, the position of the last event handed to the application
        (``None``: not started yet, events start from the server's newest)."""
        return self._positions

    def subscribe(self, channel: str, position: ChannelPosition | None) -> Request | None:
        """Subscribe to ``channel`` from ``position``. When a link is open the ``subscribe``
        request is queued and returned (wait for the :class:`Answered` of its rid); otherwise
        the next link's ``resume`` carries it and ``None`` is returned."""
        self._positions[channel] = position
        if not self._open:
            return None
        return self.request(lambda rid: Subscribe(rid, channel, *_args(position)))

    def unsubscribe(self, channel: str) -> Request | None:
        """Stop ``channel``: forget its position; queue an ``unsubscribe`` if a link is open
        (and return it)."""
        if self._positions.pop(channel, _GONE) is _GONE or not self._open:
            return None
        return self.request(lambda rid: Unsubscribe(rid, channel))

    def delivered(self, message: Message) -> None:
        """``message`` was handed to the application: a resume within this process continues
        after it (not before: if a link drops while the hand-over waits, it is asked for again)."""
        if message.channel in self._positions:
            self._positions[message.channel] = ChannelPosition(message.offset, message.epoch)

    # --- requests and control frames -------------------------------------------------------------

    def request(self, make: Callable[[int], Request]) -> Request:
        """Queue the request ``make(rid)`` with a fresh request id, and return it. Its answer
        comes as :class:`Answered` on this link; if the link drops first, :meth:`link_lost`
        lists the rid."""
        rid = self._take_rid()
        self._awaited.add(rid)
        frame = make(rid)
        self.queue(frame)
        return frame

    def forget(self, rid: int) -> None:
        """The caller stopped waiting for ``rid`` (a late answer is then ignored)."""
        self._awaited.discard(rid)

    def queue(self, frame: ClientFrame) -> None:
        """Queue a control frame for the writer (dropped if the link goes down before)."""
        self._control.append(frame)

    @property
    def has_control(self) -> bool:
        return bool(self._control)

    def take_control(self) -> bytes:
        """The queued control frames as one message to write (checked by the link's protocol).

        Raises:
            LocalProtocolError: a frame is illegal now or cannot be encoded (a caller's bug).
        """
        frames, self._control = self._control, []
        assert self._proto is not None, "no link"
        return self._proto.send_many(frames)

    def send_events(self, entries: Sequence[tuple[int, bytes]]) -> bytes:
        """Upstream events already encoded, as ``(seq, bytes)`` in seq order, as one message."""
        assert self._proto is not None, "no link"
        return self._proto.send_encoded(entries)

    # --- links -----------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """A link is up and resumed (:class:`SessionStarted` was given)."""
        return self._open

    def start_link(self, client_id: str, ack_seq: int, token: str | None) -> bytes:
        """A new link is up: returns the ``resume`` message to send first."""
        self._proto = ClientProtocol()
        self._open = False
        self._control.clear()
        channels = {c: p for c, p in self._positions.items() if p is not None}
        return self._proto.send(Resume(client_id, ack_seq, token, channels))

    def link_lost(self) -> list[int]:
        """The link is gone: returns the rids still awaited (their answer will not come)."""
        self._open = False
        self._proto = None
        self._control.clear()
        lost, self._awaited = sorted(self._awaited), set()
        return lost

    @property
    def duplicates_dropped(self) -> int:
        return self._proto.duplicates_dropped if self._proto is not None else 0

    def receive_data(self, data: bytes | str) -> Iterator[Any]:
        """Feed one message from the server; yields the events it meant, in order. A protocol
        error by the server ends the events with :class:`MustClose`."""
        proto = self._proto
        assert proto is not None, "no link"
        try:
            proto.receive_data(data)
        except RemoteProtocolError as exc:
            yield from self._events(proto)
            yield MustClose(exc.close_code, str(exc))
            return
        yield from self._events(proto)

    def _events(self, proto: ClientProtocol) -> Iterator[Any]:
        for frame in proto.events():
            handler = self._HANDLERS.get(type(frame))
            if handler is None:
                yield frame  # Message, Gap, Ack, frames of services
            else:
                yield from handler(self, proto, frame)

    def _on_resume_response(self, proto: ClientProtocol, frame: ResumeResponse) -> Iterator[Any]:
        self._open = True
        yield SessionStarted(frame.ack_seq, frame.max_frame_bytes)
        for channel, position in proto.cursors.items():
            if channel in self._positions:
                self._positions[channel] = position
                yield SubscriptionStarted(channel, position)
        for channel, wanted in list(self._positions.items()):
            # Subscribed while offline (position None: from now), or after the resume went out:
            # not part of this link's resume, so ask for it now (its answer starts it).
            if channel not in proto.cursors:
                self._control.append(Subscribe(self._take_rid(), channel, *_args(wanted)))

    def _on_subscribed(self, proto: ClientProtocol, frame: Subscribed) -> Iterator[Any]:
        restored = proto.cursors.get(frame.channel)
        if frame.channel in self._positions and restored is not None:
            self._positions[frame.channel] = restored
            yield SubscriptionStarted(frame.channel, restored)
        yield from self._answer(frame)

    def _on_answer(self, proto: ClientProtocol, frame: Unsubscribed | Receipts) -> Iterator[Any]:
        yield from self._answer(frame)
        if isinstance(frame, Receipts):
            yield frame  # the receipts service learns from every answer, awaited or not

    def _on_error(self, proto: ClientProtocol, frame: Error) -> Iterator[Any]:
        if frame.fatal:
            # The close that follows carries the same meaning: act on it now.
            reason = f"server error {frame.code}: {frame.message}"
            yield MustClose(fatal_close_code(frame.code), reason)
        elif frame.seq is not None:
            yield SendRefused(frame.seq, frame.code, frame.message)
        elif frame.rid is not None and frame.rid in self._awaited:
            yield from self._answer(frame)
        else:
            yield ServerNotice(frame.code, frame.message)

    def _on_ping(self, proto: ClientProtocol, frame: Ping) -> Iterator[Any]:
        self._control.append(frame.response())
        return iter(())

    def _answer(self, frame: Answer) -> Iterator[Any]:
        assert frame.rid is not None
        if frame.rid in self._awaited:
            self._awaited.discard(frame.rid)
            yield Answered(frame.rid, frame)

    def _take_rid(self) -> int:
        rid = self._next_rid
        self._next_rid += 1
        return rid

    _HANDLERS: ClassVar[
        dict[type, Callable[[ClientSession, ClientProtocol, Any], Iterator[Any]]]
    ] = {
        ResumeResponse: _on_resume_response,
        Subscribed: _on_subscribed,
        Unsubscribed: _on_answer,
        Receipts: _on_answer,
        Error: _on_error,
        Ping: _on_ping,
    }


_GONE: Any = object()


def _args(position: ChannelPosition | None) -> tuple[int | None, str | None]:
    return (None, None) if position is None else (position.offset, position.epoch)
