"""Tools for testing code that uses trio_realtime (and for our own reliability tests).

* :class:`FaultProxy` / :func:`open_fault_proxy`: a TCP proxy that adds latency, limits bandwidth,
  resets connections, black-holes them, slices writes...
* :class:`ServerProcess` / :func:`open_server_process`: the reference server in a child process,
  to SIGKILL and restart.
* :func:`open_memory_server`: the reference server in memory (no sockets, no threads), for
  tests of your own code, exact under ``MockClock``.
* :func:`check_store`: the store conformance kit, for a server store's own tests (checks the
  whole :class:`~trio_realtime.server.Store` contract, restart included).
* ``trio_realtime.testing.pytest_plugin``: pytest-trio fixtures built on them (add
  ``pytest_plugins = ["trio_realtime.testing.pytest_plugin"]`` to your ``conftest.py``).
"""

from __future__ import annotations

from ._memory import MEMORY_URL as MEMORY_URL
from ._memory import MemoryServer as MemoryServer
from ._memory import open_memory_server as open_memory_server
from ._proxy import FaultProxy as FaultProxy
from ._proxy import ProxyStats as ProxyStats
from ._proxy import open_fault_proxy as open_fault_proxy
from ._server import ServerProcess as ServerProcess
from ._server import open_server_process as open_server_process
from ._store_kit import check_store as check_store
from ._transport_kit import check_transport as check_transport
