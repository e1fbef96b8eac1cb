"""Auth: one refresh shared by all who hit an expired token, typed failure after repeated
refusals, and tokens kept out of logs and error messages."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_realtime import (
    AuthenticationFailed,
    CachedAuth,
    ConnectionFailed,
    ConnectionState,
    TokenRefreshFailed,
    connect_realtime,
    open_realtime,
)
from trio_realtime.server import HmacAuthenticator, SqliteStore, make_token, open_server

from .conftest import MEMORY

SECRET = b"s" * 32


async def test_a_hundred_concurrent_refreshes_make_one_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fetched: list[float] = []

    async def fetch() -> str:
        fetched.append(trio.current_time())
        await trio.sleep(1)  # a slow token service
        return f"token-{len(fetched)}"

    auth = CachedAuth(fetch, token="expired")
    results: list[str] = []

    async def caller() -> None:
        assert await auth.get_token() == "expired"
        results.append(await auth.refresh_token())

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(caller)
    assert results == ["token-1"] * 100
    assert auth.refreshes == 1
    assert await auth.get_token() == "token-1"


async def test_a_failed_fetch_reaches_every_waiter_without_its_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fetch() -> str:
        await trio.sleep(1)
        raise OSError("token service said: bearer abc123")

    auth = CachedAuth(fetch)
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await auth.refresh_token()
        except TokenRefreshFailed as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(caller)
    assert len(errors) == 10
    assert auth.refreshes == 1
    assert all("abc123" not in str(e) for e in errors)
    assert isinstance(errors[0].__cause__, OSError)


async def test_cancelled_fetch_is_taken_over_by_a_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fetch() -> str:
        await trio.sleep(1)
        return "fresh"

    auth = CachedAuth(fetch)
    got: list[str] = []

    async def waiter() -> None:
        got.append(await auth.refresh_token())

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(0.5):  # the leader gives up half way
            nursery.start_soon(waiter)
            await auth.refresh_token()
    assert got == ["fresh"]
    assert auth.refreshes == 2


async def test_a_hundred_connections_with_an_expired_token_cause_one_refresh(
    tmp_path: Path,
) -> None:
    async def fetch() -> str:
        await trio.sleep(0.05)
        return make_token(SECRET, "alice")

    auth = CachedAuth(fetch, token=make_token(SECRET, "alice", ttl=-10))  # already expired
    store = SqliteStore(os.fspath(tmp_path / "server.sqlite3"))
    async with (
        open_server(store, HmacAuthenticator(SECRET)) as server,
        trio.open_nursery() as nursery,
    ):
        url = f"ws://127.0.0.1:{server.port}/realtime"
        with trio.fail_after(60):
            connections = [
                await connect_realtime(nursery, url, config=MEMORY, auth=auth) for _ in range(100)
            ]
            for conn in connections:
                while conn.state is not ConnectionState.CONNECTED:
                    async for state in conn.states():
                        if state is ConnectionState.CONNECTED:
                            break
        assert auth.refreshes == 1
        assert len(server.sessions) == 100
        async with trio.open_nursery() as closing:
            for conn in connections:
                closing.start_soon(conn.aclose)


async def test_repeated_refusals_fail_with_a_typed_error_and_no_token_in_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued: list[str] = []

    class Forged:
        async def get_token(self) -> str:
            await trio.lowlevel.checkpoint()
            return issued[-1] if issued else self._new()

        async def refresh_token(self) -> str:
            await trio.lowlevel.checkpoint()
            return self._new()

        def _new(self) -> str:
            issued.append(make_token(b"w" * 32, f"mallory-{len(issued)}"))  # wrong secret
            return issued[-1]

    store = SqliteStore(os.fspath(tmp_path / "server.sqlite3"))
    async with open_server(store, HmacAuthenticator(SECRET)) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        async with open_realtime(url, config=MEMORY, auth=Forged()) as conn:
            with trio.fail_after(20):
                async for _ in conn.states():
                    pass
            assert conn.state is ConnectionState.FAILED
            with pytest.raises(AuthenticationFailed) as info:
                await conn.send("room", "x", 1)
    assert isinstance(info.value, ConnectionFailed)
    assert info.value.code == 4001
    assert "3 tokens in a row" in str(info.value)
    assert len(issued) == 3  # the first, and two refreshes (max_auth_failures = 3)
    for token in issued:
        assert token not in str(info.value)
        assert token not in caplog.text
        assert token.split(".")[-1] not in caplog.text  # not even the signature
    assert "4001" in caplog.text


async def test_a_failing_delegate_is_retried_then_fails_without_leaking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def fetch() -> str:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("could not refresh bearer zzz-secret-zzz")

    store = SqliteStore(os.fspath(tmp_path / "server.sqlite3"))
    async with open_server(store, HmacAuthenticator(SECRET)) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        auth = CachedAuth(fetch, token="not-a-valid-token")
        async with open_realtime(url, config=MEMORY, auth=auth) as conn:
            with trio.fail_after(20):
                async for _ in conn.states():
                    pass
    assert conn.state is ConnectionState.FAILED
    assert auth.refreshes == 2
    assert "TokenRefreshFailed" in caplog.text
    assert "zzz-secret-zzz" not in caplog.text
    assert "not-a-valid-token" not in caplog.text
