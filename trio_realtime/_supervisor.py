"""The reconnect policy as one pure table: ``(state, event) -> (state, action)``.

The connection's supervisor turns what happened (a link came up, went down with a code, the
application closed, a token refresh ended) into an :class:`Event`, looks up :data:`TABLE`, and
does the :class:`Action`. No I/O and no clocks here; ``tests/connection/test_supervisor.py``
checks every pair.
"""

from __future__ import annotations

import enum

from ._protocol import CloseAction, CloseCode, close_action
from ._service import ConnectionState

__all__ = ["TABLE", "Action", "Event", "after_refresh", "link_down", "step"]

State = ConnectionState


class Event(enum.Enum):
    LINK_UP = "link up"
    """Connected and resumed."""
    LINK_DOWN = "link down"
    """The link ended (or an attempt failed) with a code that says: retry after the backoff."""
    GOING_AWAY = "going away"
    """The server is restarting (1001): retry at once."""
    RATE_LIMITED = "rate limited"
    """The server closed with 4029: retry, after at least the initial delay."""
    TOKEN_REFUSED = "token refused"
    """The server refused the token (4001)."""
    REFUSED = "refused"
    """The server refused in a way retrying cannot fix (4003, 1008, 4400, a fatal error)."""
    RETRIES_EXHAUSTED = "retries exhausted"
    """``max_retries`` attempts in a row failed."""
    TOKEN_REFRESHED = "token refreshed"
    """The auth delegate gave a new token (or failed in a way worth retrying)."""
    REFRESH_FAILED = "refresh failed"
    """No token can be had: no delegate, it gave none, or too many were refused."""
    JOURNAL_FAILED = "journal failed"
    """The journal cannot read back the events it must send."""
    CLOSE_REQUESTED = "close requested"
    """The application closed the connection."""


class Action(enum.Enum):
    NONE = "none"
    CONNECT_AFTER_BACKOFF = "connect after the backoff delay"
    CONNECT_NOW = "connect now"
    CONNECT_AFTER_INITIAL_DELAY = "connect after at least the initial delay"
    REFRESH_TOKEN = "refresh the token"
    FAIL = "fail"
    STOP = "stop"


_LIVE = (State.CONNECTING, State.CONNECTED, State.RECONNECTING)
_DOWN: dict[Event, tuple[State, Action]] = {
    Event.LINK_UP: (State.CONNECTED, Action.NONE),
    Event.LINK_DOWN: (State.RECONNECTING, Action.CONNECT_AFTER_BACKOFF),
    Event.GOING_AWAY: (State.RECONNECTING, Action.CONNECT_NOW),
    Event.RATE_LIMITED: (State.RECONNECTING, Action.CONNECT_AFTER_INITIAL_DELAY),
    Event.TOKEN_REFUSED: (State.RECONNECTING, Action.REFRESH_TOKEN),
    Event.TOKEN_REFRESHED: (State.RECONNECTING, Action.CONNECT_AFTER_BACKOFF),
    Event.REFUSED: (State.FAILED, Action.FAIL),
    Event.RETRIES_EXHAUSTED: (State.FAILED, Action.FAIL),
    Event.REFRESH_FAILED: (State.FAILED, Action.FAIL),
    Event.JOURNAL_FAILED: (State.FAILED, Action.FAIL),
    Event.CLOSE_REQUESTED: (State.CLOSED, Action.STOP),
}

#: Every (state, event) pair. A connection in ``failed`` or ``closed`` stays there and stops,
#: whatever happens; a live one moves as ``_DOWN`` says (a link that comes up again while
#: ``connected`` cannot happen: one link at a time, so it is a no-op).
TABLE: dict[tuple[State, Event], tuple[State, Action]] = {
    **{(state, event): move for state in _LIVE for event, move in _DOWN.items()},
    **{
        (state, event): (state, Action.STOP)
        for state in (State.FAILED, State.CLOSED)
        for event in Event
    },
}


def step(state: State, event: Event) -> tuple[State, Action]:
    """The next state and what to do."""
    return TABLE[state, event]


_FINAL = {CloseAction.REFRESH_TOKEN: Event.TOKEN_REFUSED, CloseAction.FAIL: Event.REFUSED}


def _exhausted(attempt: int, max_retries: int | None) -> bool:
    return max_retries is not None and attempt >= max_retries


def link_down(code: int | None, attempt: int, max_retries: int | None) -> Event:
    """The event a link that ended with close ``code`` is, after ``attempt`` failed attempts in a
    row. A refusal and a refused token count before the retry limit (a refused token is refreshed
    first: see :func:`after_refresh`)."""
    action = close_action(code)
    if action in _FINAL:
        return _FINAL[action]
    if _exhausted(attempt, max_retries):
        return Event.RETRIES_EXHAUSTED
    if action is CloseAction.RECONNECT_NOW:
        return Event.GOING_AWAY
    return Event.RATE_LIMITED if code == CloseCode.RATE_LIMITED else Event.LINK_DOWN


def after_refresh(attempt: int, max_retries: int | None) -> Event:
    """The event a successful token refresh is: retry, unless the retry limit was reached."""
    if _exhausted(attempt, max_retries):
        return Event.RETRIES_EXHAUSTED
    return Event.TOKEN_REFRESHED
