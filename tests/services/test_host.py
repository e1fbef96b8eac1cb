"""What docs/services.md and docs/configuration.md promise of the service host: services found
by name or class, one connection per instance, the network monitor left out on request, and a
connection's log level filtering only its own messages."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trio_realtime import RealtimeConfig, open_realtime
from trio_realtime.services import NetworkMonitor, PresenceService, TypingService
from trio_realtime.testing import open_memory_server
from trio_realtime.transports import LinkClosed, Transport

CONFIG = RealtimeConfig(durability="memory", network_monitor=False)


async def test_services_by_name_and_by_class() -> None:
    async with (
        open_memory_server() as server,
        open_realtime(server.url, token="a", config=CONFIG, connector=server.connector()) as conn,
    ):
        assert conn.service("typing") is conn.service(TypingService) is conn.typing
        assert isinstance(conn.service("presence"), PresenceService)
        with pytest.raises(AttributeError, match="no network"):
            conn.service("network")  # network_monitor=False left it out
        with pytest.raises(AttributeError, match="NetworkMonitor"):
            conn.service(NetworkMonitor)


async def test_an_instance_belongs_to_one_connection() -> None:
    typing = TypingService(timeout=10.0, refresh_interval=5.0)
    async with open_memory_server() as server:
        connector = server.connector()
        async with open_realtime(
            server.url, token="a", config=CONFIG, connector=connector, services=[typing]
        ) as conn:
            assert conn.typing is typing
            with pytest.raises(ValueError, match="already runs beside a connection"):
                async with open_realtime(
                    server.url, token="b", config=CONFIG, connector=connector, services=[typing]
                ):
                    pass  # pragma: no cover


async def test_log_level_filters_one_connection_and_leaves_the_logger_alone(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_realtime")
    level_before = logging.getLogger("trio_realtime").level

    async def refused(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
        await trio.lowlevel.checkpoint()
        raise LinkClosed(None, "refused for the test")

    for log_level, expected in (("ERROR", 0), ("NOTSET", 1)):
        caplog.clear()
        config = RealtimeConfig(durability="memory", network_monitor=False, log_level=log_level)
        async with open_realtime("ws://x.invalid/", config=config, connector=refused) as conn:
            with trio.move_on_after(5):
                await conn.wait_connected()
        said = [r for r in caplog.records if "refused for the test" in r.getMessage()]
        assert len([r for r in said if r.levelno == logging.WARNING]) == expected, log_level
    assert logging.getLogger("trio_realtime").level == level_before
