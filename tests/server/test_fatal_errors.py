"""A client acts on a fatal error frame as on the close it announces: a client_id of another
user fails the connection (4003, no retry), an expired token is refreshed at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from trio_realtime import (
    Acked,
    CachedAuth,
    ConnectionFailed,
    ConnectionState,
    RealtimeConfig,
    open_realtime,
)
from trio_realtime._protocol import CloseCode, ErrorCode, fatal_close_code
from trio_realtime.server import HmacAuthenticator, make_token
from trio_realtime.testing import open_memory_server

QUICK = RealtimeConfig(
    durability="always", initial_retry_delay=0.01, max_retry_delay=0.1, network_monitor=False
)


def test_every_fatal_error_code_announces_its_close() -> None:
    """The table of docs/protocol.md ("Heartbeat and close codes")."""
    expected = {
        ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
        ErrorCode.TOKEN_EXPIRED: CloseCode.UNAUTHORIZED,
        ErrorCode.CLIENT_ID_TAKEN: CloseCode.FORBIDDEN,
        ErrorCode.TOO_MANY_SUBSCRIPTIONS: CloseCode.FORBIDDEN,
        ErrorCode.RATE_LIMITED: CloseCode.RATE_LIMITED,
        ErrorCode.TOO_SLOW: CloseCode.RATE_LIMITED,
        ErrorCode.TOO_LARGE: CloseCode.MESSAGE_TOO_BIG,
        ErrorCode.INTERNAL: CloseCode.INTERNAL_ERROR,
        ErrorCode.PROTOCOL_ERROR: CloseCode.PROTOCOL_ERROR,
        ErrorCode.OUT_OF_ORDER: CloseCode.PROTOCOL_ERROR,
        "something new": CloseCode.PROTOCOL_ERROR,
    }
    assert {code: fatal_close_code(code) for code in expected} == expected


async def test_a_client_id_of_another_user_fails_the_connection_at_once(tmp_path: Path) -> None:
    async with open_memory_server() as server:
        connector = server.connector()
        async with open_realtime(
            server.url, journal_dir=tmp_path / "a", token="alice", config=QUICK, connector=connector
        ) as alice:
            assert await (await alice.send("room", "e", 1)).wait() == Acked(seq=1)
        shutil.copytree(tmp_path / "a", tmp_path / "stolen")  # alice's client_id
        async with open_realtime(
            server.url,
            journal_dir=tmp_path / "stolen",
            token="mallory",
            config=QUICK,
            connector=connector,
        ) as mallory:
            with trio.fail_after(10):
                async for state in mallory.states():
                    if state is ConnectionState.FAILED:
                        break
            with pytest.raises(ConnectionFailed) as info:
                await mallory.send("room", "e", 2)
            assert mallory.metrics.total_reconnects == 0  # refused for good: no retry
    assert info.value.code == CloseCode.FORBIDDEN


async def test_an_expired_token_is_refreshed_without_a_refused_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under a MockClock the expiry is far in virtual time; the token is minted to expire 1 s of
    wall clock after the resume, which the server's timer turns into trio time."""
    secret = b"k" * 32
    minted: list[str] = []

    async def fetch() -> str:
        await trio.lowlevel.checkpoint()
        minted.append(make_token(secret, "alice", ttl=2))
        return minted[-1]

    config = RealtimeConfig(durability="memory", network_monitor=False)
    async with (
        open_memory_server(authenticator=HmacAuthenticator(secret)) as server,
        open_realtime(
            server.url, auth=CachedAuth(fetch), config=config, connector=server.connector()
        ) as alice,
    ):
        states = alice.states()
        with trio.fail_after(30):
            async for state in states:
                if state is ConnectionState.RECONNECTING:
                    break
            async for state in states:
                if state is ConnectionState.CONNECTED:
                    break
        # One refresh for one expiry: the fatal token_expired error was acted on as 4001.
        assert len(minted) == 2
        assert alice.metrics.total_reconnects == 1
