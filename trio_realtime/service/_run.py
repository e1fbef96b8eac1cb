"""Running named services: several connections, each with its own journal and log tag, as
siblings in one nursery, until a signal or cancellation drains and closes them."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence

import trio

from .._groups import single_error
from .._paths import data_dir, safe_name
from .._realtime import open_realtime
from ._config import ServiceConfig

__all__ = ["run_services"]

logger = logging.getLogger("trio_realtime.service")


def _journal_dir(config: ServiceConfig) -> str:
    if config.journal_dir is not None:
        return config.journal_dir
    return os.path.join(data_dir("services"), safe_name(config.name))


async def _run_one(config: ServiceConfig, started: trio.Event) -> None:
    log = logging.LoggerAdapter(logger, {"service": config.log_tag})
    async with open_realtime(
        config.url,
        journal_dir=_journal_dir(config),
        token=config.get_token(),
        config=config.realtime_config(),
    ) as conn:
        log.info("[%s] started (%s profile, %s)", config.log_tag, config.profile, config.url)
        started.set()
        async for state in conn.states():
            log.info("[%s] connection %s", config.log_tag, state.value)
    log.info("[%s] stopped", config.log_tag)


async def run_services(
    configs: Sequence[ServiceConfig],
    *,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``configs`` side by side until cancelled (or, with ``handle_signals``, until SIGTERM
    or SIGINT): leaving, each connection waits its ``close_grace_period`` for its pending events
    to be acked, then closes; what is still pending stays in its journal for the next run.
    ``task_status.started()`` once every service has started."""
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"service names must be unique, got {names}")
    with single_error():
        async with trio.open_nursery() as nursery:
            for config in configs:
                started = trio.Event()
                nursery.start_soon(_run_one, config, started)
                await started.wait()
            task_status.started()
            if handle_signals:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        logger.info("%s: stopping the services", signal.Signals(signum).name)
                        break
                nursery.cancel_scope.cancel()
