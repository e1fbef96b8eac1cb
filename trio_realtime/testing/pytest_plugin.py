"""pytest-trio fixtures: ``pytest_plugins = ["trio_realtime.testing.pytest_plugin"]``.

* ``realtime_server``: a :class:`ServerProcess` on a free port with a temporary data directory
  (``.url``, ``.token(user)``, ``await .kill()``, ``await .restart()``).
* ``fault_proxy``: a :class:`FaultProxy` in front of ``realtime_server``; connect clients to
  ``f"ws://127.0.0.1:{fault_proxy.port}/realtime"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ._proxy import FaultProxy, open_fault_proxy
from ._server import ServerProcess, open_server_process


@pytest.fixture
async def realtime_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with open_server_process(tmp_path / "realtime-server") as server:
        yield server


@pytest.fixture
async def fault_proxy(realtime_server: ServerProcess) -> AsyncIterator[FaultProxy]:
    async with open_fault_proxy(realtime_server.port) as proxy:
        yield proxy
