"""WebSocket close codes of PROTOCOL.md section 6 and what a client does after each."""

from __future__ import annotations

import enum

__all__ = ["CloseAction", "CloseCode", "close_action"]


class CloseCode(enum.IntEnum):
    """Close codes used by trio_realtime peers."""

    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006  # never sent: reported when the link dropped without a close frame
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    PROTOCOL_ERROR = 4000
    UNAUTHORIZED = 4001
    FORBIDDEN = 4003
    HEARTBEAT_TIMEOUT = 4008
    RATE_LIMITED = 4029
    UNSUPPORTED_PROTOCOL = 4400


class CloseAction(enum.Enum):
    """What a client does after the server closed the link with a given code."""

    RECONNECT_NOW = "reconnect_now"
    """Reconnect at once, without waiting for the backoff (the server is restarting)."""
    RECONNECT_BACKOFF = "reconnect_backoff"
    """Reconnect after the backoff delay."""
    REFRESH_TOKEN = "refresh_token"
    """Ask the auth delegate for a fresh token, then reconnect."""
    FAIL = "fail"
    """Do not retry: retrying cannot succeed (forbidden, unsupported version, origin refused)."""


_ACTIONS: dict[int, CloseAction] = {
    CloseCode.GOING_AWAY: CloseAction.RECONNECT_NOW,
    CloseCode.POLICY_VIOLATION: CloseAction.FAIL,
    CloseCode.UNAUTHORIZED: CloseAction.REFRESH_TOKEN,
    CloseCode.FORBIDDEN: CloseAction.FAIL,
    CloseCode.UNSUPPORTED_PROTOCOL: CloseAction.FAIL,
}


def close_action(code: int | None) -> CloseAction:
    """The client's reaction to a close ``code`` (``None``: the link dropped without a close frame).

    Every code not listed in PROTOCOL.md section 6 as final or special (1000, 1006, 1009, 4000, 4008,
    4029 and unknown codes) means: reconnect after the backoff delay.
    """
    if code is None:
        return CloseAction.RECONNECT_BACKOFF
    return _ACTIONS.get(code, CloseAction.RECONNECT_BACKOFF)
