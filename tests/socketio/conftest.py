"""Fixtures: the real Socket.IO servers (examples/socketio_server.js and .py), one per test.

Each yields a :class:`~tests.socketio.servers.SocketIOServer` (``.port``, ``.url``, ``.ws_url``,
``.log_path``, ``received()``, ``kill()``, ``restart()``) and stops its process afterwards. For
other options (a token, no recovery) use ``open_node_server`` / ``open_python_server`` from
``tests/socketio/servers.py`` directly, as async context managers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .servers import SocketIOServer, open_node_server, open_python_server


@pytest.fixture
async def node_server(tmp_path: Path) -> AsyncIterator[SocketIOServer]:
    """socket.io 4.8 with connection state recovery."""
    async with open_node_server(tmp_path) as server:
        yield server


@pytest.fixture
async def node_server_no_recovery(tmp_path: Path) -> AsyncIterator[SocketIOServer]:
    """socket.io 4.8 started with --no-recovery."""
    async with open_node_server(tmp_path, recovery=False) as server:
        yield server


@pytest.fixture
async def python_server(tmp_path: Path) -> AsyncIterator[SocketIOServer]:
    """python-socketio 5 (never recovers a session)."""
    async with open_python_server(tmp_path) as server:
        yield server


@pytest.fixture(params=["node", "python"])
async def any_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SocketIOServer]:
    """Each of the two servers in turn (Node with recovery)."""
    opener = open_node_server if request.param == "node" else open_python_server
    async with opener(tmp_path) as server:
        yield server
