from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from trio_realtime import RealtimeConfig
from trio_realtime.server import (
    AllowAll,
    Authenticator,
    RealtimeServer,
    ServerConfig,
    SqliteStore,
    open_server,
)

FAST = RealtimeConfig(
    initial_retry_delay=0.02,
    max_retry_delay=0.1,
    connect_timeout=5,
    close_grace_period=5,
)


@asynccontextmanager
async def running_server(
    data: Path,
    *,
    port: int = 0,
    auth: Authenticator | None = None,
    config: ServerConfig | None = None,
) -> AsyncIterator[RealtimeServer]:
    store = SqliteStore(os.fspath(data / "server.sqlite3"))
    async with open_server(store, auth or AllowAll(), port=port, config=config) as server:
        yield server


def url(server: RealtimeServer) -> str:
    return f"ws://127.0.0.1:{server.port}/realtime"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path
