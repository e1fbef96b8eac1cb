"""``open_realtime`` / ``connect_realtime``, and :class:`Connection` with its typed service
accessors (``conn.presence``, ``conn.typing``, ``conn.receipts``).

The accessors live here, above both the connection and the services, so neither imports the
other (``tests/test_layers.py``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from ._config import RealtimeConfig
from ._connection import BaseConnection
from ._groups import single_error
from ._service import ServiceSpec
from ._tokens import AuthDelegate
from .services import (
    STANDARD_SERVICES,
    NetworkMonitor,
    PresenceService,
    ReceiptsService,
    TypingService,
)
from .transports import Connector

__all__ = ["Connection", "connect_realtime", "open_realtime"]


class Connection(BaseConnection):
    """A durable connection to a trio_realtime server. Get one from :func:`open_realtime` or
    :func:`connect_realtime`."""

    @property
    def presence(self) -> PresenceService:
        """Who is present in a channel, and this client's own status (:doc:`presence`)."""
        return self.service(PresenceService)  # type: ignore[no-any-return]

    @property
    def typing(self) -> TypingService:
        """Typing indicators (:doc:`typing`)."""
        return self.service(TypingService)  # type: ignore[no-any-return]

    @property
    def receipts(self) -> ReceiptsService:
        """Read receipts (:doc:`receipts`)."""
        return self.service(ReceiptsService)  # type: ignore[no-any-return]


async def connect_realtime(
    nursery: trio.Nursery,
    url: str,
    *,
    config: RealtimeConfig | None = None,
    journal_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    auth: AuthDelegate | None = None,
    connector: Connector | None = None,
    services: Sequence[ServiceSpec] = STANDARD_SERVICES,
) -> Connection:
    """Start a connection in ``nursery``; returns once the first connection attempt has finished
    (connected, or reconnecting in the background). Close it with :meth:`Connection.aclose`.

    ``url`` picks the transport by its scheme (``ws://``, ``wss://``, or one added with
    :func:`trio_realtime.transports.register_transport`); ``connector`` overrides it.
    ``services`` are the features the connection runs beside it (instances, or factories such
    as the classes): presence, typing, receipts and the network monitor by default."""
    connection = _connection(url, config, journal_dir, token, auth, connector, services)
    with single_error():
        result: Connection = await nursery.start(connection._run)
    return result


@asynccontextmanager
async def open_realtime(
    url: str,
    *,
    config: RealtimeConfig | None = None,
    journal_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    auth: AuthDelegate | None = None,
    connector: Connector | None = None,
    services: Sequence[ServiceSpec] = STANDARD_SERVICES,
) -> AsyncIterator[Connection]:
    """Open a durable connection for the duration of the block::

        async with open_realtime("ws://127.0.0.1:8765/realtime", journal_dir=path) as conn:
            receipt = await conn.send("room:1", "chat_message", {"text": "hi"})

    Leaving the block waits up to ``config.close_grace_period`` for pending events to be
    acknowledged, then closes; what is still pending stays in the journal for next time.
    """
    # Built before the nursery opens: a bad argument raises itself, not inside a group.
    connection = _connection(url, config, journal_dir, token, auth, connector, services)
    with single_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(connection._run)
            try:
                yield connection
            except BaseException:
                # Cancelled or failing: close promptly, no grace period (the journal keeps the
                # rest).
                with trio.CancelScope(shield=True):
                    await connection.aclose(grace_period=0, abort=True)
                raise
            await connection.aclose()


def _connection(
    url: str,
    config: RealtimeConfig | None,
    journal_dir: str | os.PathLike[str] | None,
    token: str | None,
    auth: AuthDelegate | None,
    connector: Connector | None,
    services: Sequence[ServiceSpec],
) -> Connection:
    config = config or RealtimeConfig()
    if not config.network_monitor:
        services = [
            s for s in services if s is not NetworkMonitor and not isinstance(s, NetworkMonitor)
        ]
    return Connection(
        url,
        config=config,
        journal_dir=journal_dir,
        token=token,
        auth=auth,
        connector=connector,
        services=services,
    )
