"""The reconnect policy table, every (state, event) pair, without I/O."""

from __future__ import annotations

import pytest

from trio_realtime import ConnectionState
from trio_realtime._protocol import CloseCode
from trio_realtime._supervisor import TABLE, Action, Event, after_refresh, link_down, step

S, E, A = ConnectionState, Event, Action

#: What the policy must be, written out by hand for every live state (the table derives it).
LIVE = {
    E.LINK_UP: (S.CONNECTED, A.NONE),
    E.LINK_DOWN: (S.RECONNECTING, A.CONNECT_AFTER_BACKOFF),
    E.GOING_AWAY: (S.RECONNECTING, A.CONNECT_NOW),
    E.RATE_LIMITED: (S.RECONNECTING, A.CONNECT_AFTER_INITIAL_DELAY),
    E.TOKEN_REFUSED: (S.RECONNECTING, A.REFRESH_TOKEN),
    E.TOKEN_REFRESHED: (S.RECONNECTING, A.CONNECT_AFTER_BACKOFF),
    E.REFUSED: (S.FAILED, A.FAIL),
    E.RETRIES_EXHAUSTED: (S.FAILED, A.FAIL),
    E.REFRESH_FAILED: (S.FAILED, A.FAIL),
    E.JOURNAL_FAILED: (S.FAILED, A.FAIL),
    E.CLOSE_REQUESTED: (S.CLOSED, A.STOP),
}


def test_the_table_covers_every_pair() -> None:
    assert set(TABLE) == {(state, event) for state in S for event in E}


@pytest.mark.parametrize("state", [S.CONNECTING, S.CONNECTED, S.RECONNECTING])
@pytest.mark.parametrize("event", list(E))
def test_a_live_connection(state: ConnectionState, event: Event) -> None:
    assert step(state, event) == LIVE[event]


@pytest.mark.parametrize("state", [S.FAILED, S.CLOSED])
@pytest.mark.parametrize("event", list(E))
def test_an_ended_connection_stays_ended(state: ConnectionState, event: Event) -> None:
    assert step(state, event) == (state, A.STOP)


@pytest.mark.parametrize(
    ("code", "event"),
    [
        (None, E.LINK_DOWN),  # dropped without a close frame
        (CloseCode.NORMAL, E.LINK_DOWN),
        (CloseCode.ABNORMAL, E.LINK_DOWN),
        (CloseCode.MESSAGE_TOO_BIG, E.LINK_DOWN),
        (CloseCode.INTERNAL_ERROR, E.LINK_DOWN),
        (CloseCode.PROTOCOL_ERROR, E.LINK_DOWN),
        (CloseCode.HEARTBEAT_TIMEOUT, E.LINK_DOWN),
        (4999, E.LINK_DOWN),  # unknown codes: retry
        (CloseCode.GOING_AWAY, E.GOING_AWAY),
        (CloseCode.RATE_LIMITED, E.RATE_LIMITED),
        (CloseCode.UNAUTHORIZED, E.TOKEN_REFUSED),
        (CloseCode.FORBIDDEN, E.REFUSED),
        (CloseCode.POLICY_VIOLATION, E.REFUSED),
        (CloseCode.UNSUPPORTED_PROTOCOL, E.REFUSED),
    ],
)
def test_close_codes(code: int | None, event: Event) -> None:
    assert link_down(code, attempt=0, max_retries=None) == event
    assert link_down(code, attempt=2, max_retries=3) == event


@pytest.mark.parametrize(
    "code", [None, CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.RATE_LIMITED]
)
def test_retries_run_out_for_every_retried_code(code: int | None) -> None:
    assert link_down(code, attempt=3, max_retries=3) == E.RETRIES_EXHAUSTED


def test_a_refusal_and_a_refused_token_come_before_the_retry_limit() -> None:
    assert link_down(CloseCode.FORBIDDEN, attempt=9, max_retries=3) == E.REFUSED
    assert link_down(CloseCode.UNAUTHORIZED, attempt=9, max_retries=3) == E.TOKEN_REFUSED
    assert after_refresh(attempt=9, max_retries=3) == E.RETRIES_EXHAUSTED
    assert after_refresh(attempt=2, max_retries=3) == E.TOKEN_REFRESHED
    assert after_refresh(attempt=99, max_retries=None) == E.TOKEN_REFRESHED
