"""WebSocket close codes of PROTOCOL.md section 6 and what a client does after each; the codes of
``error`` frames, and the close code a fatal one announces."""

from __future__ import annotations

import enum

__all__ = ["CloseAction", "CloseCode", "ErrorCode", "close_action", "fatal_close_code"]


class CloseCode(enum.IntEnum):
    """Close codes used by trio_realtime peers."""

    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006  # never sent: reported when the link dropped without a close frame
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
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


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` frame (docs/protocol.md lists when each is sent)."""

    # Fatal: the connection closes after them.
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    CLIENT_ID_TAKEN = "client_id_taken"
    PROTOCOL_ERROR = "protocol_error"
    OUT_OF_ORDER = "out_of_order"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    RATE_LIMITED = "rate_limited"
    TOO_SLOW = "too_slow"
    INTERNAL = "internal"
    # Non-fatal (fatal only where noted): about one event (``seq``) or request (``rid``).
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    """Non-fatal for a lone event; fatal (1009) for a message or batch."""
    INVALID_PAYLOAD = "invalid_payload"
    INVALID_NAME = "invalid_name"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    """Non-fatal for a ``subscribe``; fatal (4003) for a ``resume``."""
    PRESENCE_LIMIT = "presence_limit"
    TYPING_LIMIT = "typing_limit"
    INVALID_RECEIPT = "invalid_receipt"


#: The close a fatal error announces (the client acts on the error at once; the close follows).
_FATAL_CLOSES: dict[str, int] = {
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_EXPIRED: CloseCode.UNAUTHORIZED,
    ErrorCode.CLIENT_ID_TAKEN: CloseCode.FORBIDDEN,
    ErrorCode.FORBIDDEN: CloseCode.FORBIDDEN,
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: CloseCode.FORBIDDEN,
    ErrorCode.PROTOCOL_ERROR: CloseCode.PROTOCOL_ERROR,
    ErrorCode.OUT_OF_ORDER: CloseCode.PROTOCOL_ERROR,
    ErrorCode.UNSUPPORTED_PROTOCOL: CloseCode.UNSUPPORTED_PROTOCOL,
    ErrorCode.RATE_LIMITED: CloseCode.RATE_LIMITED,
    ErrorCode.TOO_SLOW: CloseCode.RATE_LIMITED,
    ErrorCode.TOO_LARGE: CloseCode.MESSAGE_TOO_BIG,
    ErrorCode.INTERNAL: CloseCode.INTERNAL_ERROR,
}


def fatal_close_code(code: str) -> int:
    """The close code that follows a fatal error with ``code`` (unknown codes: 4000)."""
    return _FATAL_CLOSES.get(code, CloseCode.PROTOCOL_ERROR)
