"""``open_realtime`` / ``connect_realtime``: a :class:`Connection` with the standard services."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import trio

from ._config import RealtimeConfig
from ._connection import AuthDelegate, Connection, Service
from ._transports import Connector
from .services import STANDARD_SERVICES

__all__ = ["connect_realtime", "open_realtime"]


async def connect_realtime(
    nursery: trio.Nursery,
    url: str,
    *,
    config: RealtimeConfig | None = None,
    journal_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    auth: AuthDelegate | None = None,
    connector: Connector | None = None,
    services: Sequence[Callable[[Connection], Service]] = STANDARD_SERVICES,
) -> Connection:
    """Start a connection in ``nursery``; returns once the first connection attempt has finished
    (connected, or reconnecting in the background). Close it with :meth:`Connection.aclose`.

    ``services`` are the features the connection runs beside it: presence, typing, receipts and
    the network monitor by default."""
    connection = Connection(
        url,
        config=config or RealtimeConfig(),
        journal_dir=journal_dir,
        token=token,
        auth=auth,
        connector=connector,
        services=services,
    )
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
    services: Sequence[Callable[[Connection], Service]] = STANDARD_SERVICES,
) -> AsyncIterator[Connection]:
    """Open a durable connection for the duration of the block::

        async with open_realtime("ws://127.0.0.1:8765/realtime", journal_dir=path) as conn:
            receipt = await conn.send("room:1", "chat_message", {"text": "hi"})

    Leaving the block waits up to ``config.close_grace_period`` for pending events to be
    acknowledged, then closes; what is still pending stays in the journal for next time.
    """
    async with trio.open_nursery() as nursery:
        connection = await connect_realtime(
            nursery,
            url,
            config=config,
            journal_dir=journal_dir,
            token=token,
            auth=auth,
            connector=connector,
            services=services,
        )
        try:
            yield connection
        except BaseException:
            # Cancelled or failing: close promptly, no grace period (the journal keeps the rest).
            with trio.CancelScope(shield=True):
                await connection.aclose(grace_period=0, abort=True)
            raise
        await connection.aclose()
