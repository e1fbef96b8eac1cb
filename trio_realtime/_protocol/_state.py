"""The connection state table: every legal (state, sender, frame) transition, in one place.

Both peers walk the same table. A frame sent by the client in state ``S`` moves the client to
``TABLE[CLIENT, S][type(frame)]`` when it sends it, and moves the server the same way when it receives
it; likewise for frames the server sends. A frame absent from the table for the current state is
illegal: sending it raises :class:`LocalProtocolError`, receiving it raises :class:`ProtocolError`.

::

    IDLE --client: resume--> RESUMING --server: resume_response--> OPEN --close--> CLOSED
"""

from __future__ import annotations

import enum

from .._errors import LocalProtocolError, RemoteProtocolError

__all__ = ["TABLE", "Role", "State", "transition"]


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    IDLE = "idle"
    """Connected; the client has not sent ``resume`` yet."""
    RESUMING = "resuming"
    """``resume`` sent; waiting for ``resume_response``. Only heartbeats and errors may pass."""
    OPEN = "open"
    """Handshake done; events flow both ways."""
    CLOSED = "closed"
    """The link is closed or failed; nothing passes."""


#: ``TABLE[sender, state]`` maps each frame class the sender may send in ``state`` to the next state.
#: Filled by the frame declarations (``_kinds.py``): one declaration per frame kind says who sends it
#: and in which states.
TABLE: dict[tuple[Role, State], dict[type, State]] = {
    (role, state): {} for role in Role for state in State
}


def transition(me: Role, sender: Role, state: State, frame: object) -> State:
    """The state after ``sender`` sends ``frame`` in ``state``, seen by the peer playing ``me``.

    Raises:
        LocalProtocolError: ``me`` is the sender and the frame is illegal in ``state``.
        ProtocolError: the peer is the sender and the frame is illegal in ``state``.
    """
    next_state = TABLE[sender, state].get(type(frame))
    if next_state is None:
        name = type(frame).__name__
        if sender is me:
            raise LocalProtocolError(f"cannot send {name} in state {state.value}")
        raise RemoteProtocolError(f"{sender.value} sent {name} in state {state.value}")
    return next_state
