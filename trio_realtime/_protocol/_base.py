"""What :class:`ClientProtocol` and :class:`ServerProtocol` share: state, event queue, send/receive."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, NoReturn, TypeVar

from .._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._close import CloseCode
from ._codec import encode_frame, join_encoded
from ._state import TABLE, Role, State, transition

_Out = TypeVar("_Out")  # frames this side sends
_In = TypeVar("_In")  # frames this side receives


class ProtocolBase(Generic[_Out, _In]):
    """A sans-I/O protocol endpoint: ``send`` returns bytes to write, ``receive_data`` takes bytes read,
    ``events`` yields what they meant. No sockets, no clocks, no tasks."""

    _role: Role
    _peer: Role

    def __init__(self, decode: Callable[[bytes | str], list[_In]]) -> None:
        self._decode = decode
        self._state = State.IDLE
        self._events: deque[Any] = deque()
        self.close_code: int | None = None
        """The close code once the link is closed (``None`` until then, or if none was given)."""

    @property
    def state(self) -> State:
        return self._state

    # --- sending ---------------------------------------------------------------------------------

    def send(self, frame: _Out) -> bytes:
        """Check ``frame`` is legal now, apply it to the state, and return the message to write.

        Raises:
            LocalProtocolError: the frame is illegal in the current state or cannot be encoded.
        """
        return self.send_many((frame,))

    def send_many(self, frames: Iterable[_Out]) -> bytes:
        """As :meth:`send`, for several frames written as one batch message, in order.

        Every frame is encoded before any is applied, so a payload JSON cannot carry raises
        :class:`LocalProtocolError` and changes nothing. A frame illegal in the current state is a bug
        in the caller: like h11, the object then moves to ``CLOSED`` and is not usable any more.
        """
        frames = list(frames)
        encoded = [encode_frame(frame) for frame in frames]  # type: ignore[arg-type]
        try:
            for frame in frames:
                self._state = transition(self._role, self._role, self._state, frame)
                self._on_send(frame)
        except LocalProtocolError:
            self._state = State.CLOSED
            raise
        return join_encoded(encoded)

    def _on_send(self, frame: _Out) -> None:
        """Hook: update bookkeeping after a legal frame was sent."""

    # --- receiving -------------------------------------------------------------------------------

    def receive_data(self, data: bytes | str) -> None:
        """Feed one WebSocket message received from the peer; read the results from :meth:`events`.

        Frames of a batch before a bad frame are still applied and their events queued.

        Raises:
            ProtocolError: the message is malformed or holds a frame illegal in the current state.
                The link must then be closed with ``exc.close_code``; the object is ``CLOSED``.
        """
        if self._state is State.CLOSED:
            raise LocalProtocolError("receive_data() after the connection closed")
        try:
            # transition() inlined: the frames of a batch (hundreds of events) mostly keep the
            # state, so its row of the table is looked up again only when the state changes.
            peer = self._peer
            state: State = self._state
            legal = TABLE[peer, state]
            for frame in self._decode(data):
                next_state = legal.get(type(frame))
                if next_state is None:
                    next_state = transition(self._role, peer, state, frame)  # raises, saying why
                self._state = next_state
                self._on_receive(frame)
                if self._state is not state:
                    state = self._state
                    legal = TABLE[peer, state]
        except ProtocolError as exc:
            self._state = State.CLOSED
            self.close_code = exc.close_code
            raise

    def _on_receive(self, frame: _In) -> None:
        """Hook: apply a legal received frame; the default queues it as an event."""
        self._events.append(frame)

    def events(self) -> Iterator[Any]:
        """Yield, and forget, every event queued so far, in order."""
        while self._events:
            yield self._events.popleft()

    # --- closing ---------------------------------------------------------------------------------

    def connection_closed(self, code: int | None = None) -> None:
        """Record that the link is gone (closed by either side, with ``code`` if there was one)."""
        self._state = State.CLOSED
        self.close_code = code

    def _fail(self, message: str, *, field: str | None = None) -> NoReturn:
        """Raise a remote protocol error (the caller closes with 4000)."""
        raise RemoteProtocolError(message, field=field, close_code=CloseCode.PROTOCOL_ERROR)
