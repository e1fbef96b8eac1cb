"""A public context manager raises the one error of ours that happened, never a trio group, so
``except RealtimeError`` (or the specific class) catches it as docs/errors.md says."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_realtime import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    ConnectTimeout,
    JournalError,
    JournalLocked,
    RealtimeConfig,
    RealtimeError,
    connect_realtime,
    open_realtime,
)
from trio_realtime._journal import open_journal
from trio_realtime.queue import open_queue
from trio_realtime.server import AllowAll, Identity, open_server
from trio_realtime.testing import open_memory_server

QUICK = RealtimeConfig(
    initial_retry_delay=0.01, max_retry_delay=0.05, network_monitor=False, connect_timeout=2
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "kind"),
    [("http://example.com/", ConfigError), ("ws://", ConfigError), (42, TypeError)],
)
async def test_a_bad_url_raises_itself(url: object, kind: type[Exception]) -> None:
    with pytest.raises(kind):
        async with open_realtime(url, config=QUICK):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_a_locked_journal_raises_journal_locked(tmp_path: Path) -> None:
    async with open_memory_server() as server:
        connect = server.connector()
        async with open_realtime(
            server.url, token="a", journal_dir=tmp_path, config=QUICK, connector=connect
        ):
            with pytest.raises(JournalLocked) as info:
                async with open_realtime(
                    server.url, token="a", journal_dir=tmp_path, config=QUICK, connector=connect
                ):
                    pass  # pragma: no cover
            assert isinstance(info.value, RealtimeError)


async def test_an_unusable_journal_dir_raises_a_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="a-file"):
        async with open_realtime(
            "ws://127.0.0.1:1/", journal_dir=blocker / "journal", config=QUICK
        ):
            pass  # pragma: no cover


async def test_a_refused_token_raises_authentication_failed(tmp_path: Path) -> None:
    class Refuse(AllowAll):
        async def authenticate(self, token: str | None) -> Identity | None:
            await trio.lowlevel.checkpoint()
            return None  # refused: close 4001

    async with open_server("memory:", Refuse()) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        with pytest.raises(AuthenticationFailed):
            async with open_realtime(url, token="t", config=QUICK, journal_dir=tmp_path) as conn:
                await conn.wait_connected(timeout=10)
        with pytest.raises(RealtimeError):
            async with open_realtime(url, token="t", config=QUICK, journal_dir=tmp_path) as conn:
                await conn.send("room", "chat", "hi")


async def test_an_error_in_the_block_comes_out_as_itself() -> None:
    async with open_memory_server() as server:
        with pytest.raises(KeyError):
            async with open_realtime(
                server.url, token="a", config=QUICK, connector=server.connector()
            ):
                raise KeyError("mine")


async def test_the_server_the_journal_and_the_queue_raise_plain_errors(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        async with open_server("memory:", AllowAll()):
            1 / 0  # noqa: B018
    with pytest.raises(ZeroDivisionError):
        async with open_journal(tmp_path / "j"):
            1 / 0  # noqa: B018
    with pytest.raises(ZeroDivisionError):
        async with open_queue("q", directory=tmp_path / "q"):
            1 / 0  # noqa: B018
    with pytest.raises(ZeroDivisionError):
        async with open_memory_server():
            1 / 0  # noqa: B018


async def test_a_closed_port_says_so_once_and_wait_connected_times_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_realtime")
    url = f"ws://127.0.0.1:{closed_port()}/realtime"
    config = RealtimeConfig(
        durability="memory", initial_retry_delay=0.01, max_retry_delay=0.02, network_monitor=False
    )
    async with open_realtime(url, config=config) as conn:
        with pytest.raises(
            ConnectTimeout, match=r"within 0\.5 s; last error: cannot connect"
        ) as info:
            await conn.wait_connected(timeout=0.5)
        assert isinstance(info.value, RealtimeError)
        assert isinstance(info.value, TimeoutError)
        assert conn.metrics.total_reconnects >= 3  # it kept trying
        assert conn.last_error is not None
        assert "cannot connect" in conn.last_error.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    retries = [r for r in caplog.records if r.levelno == logging.INFO and "ended: " in r.message]
    assert len(retries) >= 2  # the same cause again: said at INFO
    assert url in warnings[0]
    assert "cannot connect" in warnings[0]


async def test_wait_connected_raises_the_failure(autojump_clock: trio.testing.MockClock) -> None:
    config = RealtimeConfig(durability="memory", network_monitor=False, max_retries=2)
    url = f"ws://127.0.0.1:{closed_port()}/realtime"
    async with open_realtime(url, config=config) as conn:
        with pytest.raises(ConnectionFailed, match="gave up after 2 retries"):
            await conn.wait_connected()


async def test_a_server_stops_at_once_with_clients_connected() -> None:
    """Without dropping them first, each connection's close handshake could take 2 s once the
    server's readers are cancelled: three clients would hold the exit for 6 s."""
    config = RealtimeConfig(durability="memory", network_monitor=False, initial_retry_delay=5)
    async with trio.open_nursery() as clients:
        with trio.CancelScope() as bound:
            async with open_server("memory:", AllowAll()) as server:
                url = f"ws://127.0.0.1:{server.port}/realtime"
                conns = [
                    await connect_realtime(clients, url, token=f"u{n}", config=config)
                    for n in range(3)
                ]
                for conn in conns:
                    await conn.wait_connected(timeout=10)
                assert len(server.sessions) == 3
                bound.deadline = trio.current_time() + 1.5  # for leaving the block
        assert not bound.cancelled_caught, "the server took over 1.5 s to stop"
        for conn in conns:
            await conn.aclose(abort=True)
