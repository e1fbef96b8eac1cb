"""One declaration per frame kind: who sends it, in which connection states, and how it is
decoded. The codec's tables (``_codec.py``) and the state table (``_state.py``) are derived from
these declarations; :func:`register_frame_kind` adds a kind from outside the package (the frames of
a new service), so that a new service touches no module of the protocol.

A frame class has ``TYPE`` (the frame's ``type`` on the wire; ``"meta"`` for service frames,
which also have ``KIND``) and ``to_wire()``; its decoder builds it from a :class:`Fields` view of
the JSON object, which names the field at fault in every :class:`ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from . import _codec
from ._codec import _Fields as Fields
from ._frames import (
    Ack,
    Error,
    Message,
    Ping,
    Pong,
    PresenceDiff,
    PresenceState,
    PresenceUpdate,
    ReadReceipt,
    Receipts,
    ReceiptsQuery,
    Resume,
    ResumeResponse,
    Skip,
    Subscribe,
    Subscribed,
    Typing,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
)
from ._state import TABLE, Role, State

__all__ = ["Fields", "FrameKind", "register_frame_kind"]

_I, _R, _O, _C = State.IDLE, State.RESUMING, State.OPEN, State.CLOSED

#: The states of most frames: legal once the connection is open, and it stays open.
OPEN: Mapping[State, State] = {_O: _O}


@attrs.frozen
class FrameKind:
    """A frame kind: ``frame`` (its class), sent by ``sender``, legal in the states of
    ``transitions`` (state -> the state after it), decoded by ``decode``."""

    frame: type
    sender: Role
    decode: Callable[[Fields], Any]
    transitions: Mapping[State, State] = OPEN


def register_frame_kind(kind: FrameKind) -> None:
    """Make ``kind`` part of the protocol: its decoder in the codec's tables (by ``TYPE``, or by
    ``KIND`` for meta frames) and its transitions in the state table.

    Raises:
        ValueError: another frame class already has that type or kind from that sender.
    """
    frame = kind.frame
    frame_type: str = frame.TYPE  # type: ignore[attr-defined]
    client = kind.sender is Role.CLIENT
    if frame_type == "meta":
        table = _codec._CLIENT_META if client else _codec._SERVER_META
        name: str = frame.KIND  # type: ignore[attr-defined]
    else:
        table = _codec._CLIENT_TYPES if client else _codec._SERVER_TYPES
        name = frame_type
    if name in table and _declared.get((kind.sender, name)) is not frame:
        raise ValueError(f"{kind.sender.value} frames of {name!r} are declared already")
    table[name] = kind.decode
    _declared[kind.sender, name] = frame
    for state, after in kind.transitions.items():
        TABLE[kind.sender, state][frame] = after


_declared: dict[tuple[Role, str], type] = {}

_C_ = Role.CLIENT
_S_ = Role.SERVER

#: The kinds of PROTOCOL.md, in one place.
DECLARATIONS = (
    # Handshake: resume first, then the server's answer opens the connection.
    FrameKind(Resume, _C_, _codec._resume, {_I: _R}),
    FrameKind(ResumeResponse, _S_, _codec._resume_response, {_R: _O}),
    # Heartbeats pass while resuming too.
    FrameKind(Ping, _C_, _codec._ping, {_R: _R, _O: _O}),
    FrameKind(Pong, _C_, _codec._pong),
    FrameKind(Ping, _S_, _codec._ping),
    FrameKind(Pong, _S_, _codec._pong, {_R: _R, _O: _O}),
    # Errors in any state but closed (before closing).
    FrameKind(Error, _S_, _codec._error, {_I: _I, _R: _R, _O: _O}),
    # Events and acks. A server closed on a bad frame may still ack the events it received before
    # it and has since stored: that spares the client their retransmission (ServerProtocol checks
    # that an ack covers only what was received).
    FrameKind(UpstreamEvent, _C_, _codec._upstream_event),
    FrameKind(Skip, _C_, _codec._skip),
    FrameKind(Ack, _S_, _codec._ack, {_O: _O, _C: _C}),
    FrameKind(Message, _S_, _codec._downstream_event),
    # Subscriptions.
    FrameKind(Subscribe, _C_, _codec._subscribe),
    FrameKind(Subscribed, _S_, _codec._subscribed),
    FrameKind(Unsubscribe, _C_, _codec._unsubscribe),
    FrameKind(Unsubscribed, _S_, _codec._unsubscribed),
    # Meta frames of the built-in services (presence, typing, receipts).
    FrameKind(PresenceUpdate, _C_, _codec._presence_update),
    FrameKind(PresenceState, _S_, _codec._presence_state),
    FrameKind(PresenceDiff, _S_, _codec._presence_diff),
    FrameKind(Typing, _C_, _codec._typing_from_client),
    FrameKind(Typing, _S_, _codec._typing_from_server),
    FrameKind(ReadReceipt, _C_, _codec._receipt_from_client),
    FrameKind(ReadReceipt, _S_, _codec._receipt_from_server),
    FrameKind(ReceiptsQuery, _C_, _codec._receipts_query),
    FrameKind(Receipts, _S_, _codec._receipts),
)

for _kind in DECLARATIONS:
    register_frame_kind(_kind)
