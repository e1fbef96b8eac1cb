"""Running named services: each a connection with its own journal, log tag, plugins and
handlers; several side by side in one nursery, until a signal or cancellation drains and closes
them."""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from .._errors import AuthenticationFailed, ConfigError, RealtimeError
from .._groups import single_error
from .._outbox import Receipt
from .._paths import data_dir, safe_name
from .._protocol import Gap, Message
from .._realtime import Connection, open_realtime
from .._service import ConnectionState
from ._config import ServiceConfig
from ._handlers import (
    DesktopNotifications,
    FileStorage,
    LogNotifications,
    NotificationHandler,
    ServiceHandlers,
    ServiceStorage,
)
from ._plugins import Plugin, PluginRunner, load_plugin

__all__ = [
    "Service",
    "ServiceContext",
    "ServiceFailed",
    "ServiceTagFilter",
    "check_services",
    "run_services",
]

logger = logging.getLogger("trio_realtime.service")

_tag: contextvars.ContextVar[str] = contextvars.ContextVar("trio_realtime_service", default="-")


class ServiceTagFilter(logging.Filter):
    """Sets ``record.service`` to the tag of the service whose task logged it (``-`` outside
    any), the connection's own records included: add it to a handler and use ``%(service)s`` in
    its format (``trio-realtime run`` does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = _tag.get()
        return True


class ServiceFailed(RealtimeError):
    """A service stopped for good (its server refused its token, say); the others went on."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(f"service {name!r} failed: {error}")
        self.name = name
        self.error = error


def _journal_dir(config: ServiceConfig) -> str:
    if config.journal_dir is not None:
        return config.journal_dir
    return os.path.join(data_dir("services"), safe_name(config.name))


@attrs.define(eq=False)
class ServiceContext:
    """What a service gives its plugins (``initialize(context)``)."""

    config: ServiceConfig
    connection: Connection
    """The service's connection: send, subscribe, presence, metrics, ..."""
    storage: ServiceStorage
    notifications: NotificationHandler

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tag(self) -> str:
        return self.config.log_tag

    async def send(self, channel: str, event: str, payload: Any, **options: Any) -> Receipt:
        """``connection.send(...)``: journaled, sent when the link is up."""
        receipt: Receipt = await self.connection.send(channel, event, payload, **options)
        return receipt

    async def notify(self, title: str, body: str) -> None:
        await self.notifications.notify(title, body)


class _TokenFromHandler:
    """The auth handler as the connection's token source."""

    def __init__(self, service: Service) -> None:
        self._service = service

    async def get_token(self) -> str:
        return await self._service.handlers.auth.get_auth_data()

    async def refresh_token(self) -> str:
        return await self._service.handlers.auth.get_auth_data()


@attrs.define(eq=False)
class Service:
    """A :class:`ServiceConfig` with its plugins (objects, added to those its config names)
    and handlers. :func:`run_services` runs it."""

    config: ServiceConfig
    plugins: Sequence[Plugin] = ()
    handlers: ServiceHandlers = attrs.Factory(ServiceHandlers)
    _runners: list[PluginRunner] = attrs.field(factory=list, init=False)
    _connected: bool = attrs.field(default=False, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _named: list[Plugin] | None = attrs.field(default=None, init=False)
    _notices: trio.MemorySendChannel[tuple[str, str]] | None = attrs.field(default=None, init=False)

    def all_plugins(self) -> list[Plugin]:
        """Its plugins: those its config names (loaded the first time), then those given.

        Raises:
            ConfigError: naming ``services.NAME.plugins``, if one cannot be loaded.
        """
        if self._named is None:
            try:
                self._named = [load_plugin(name) for name in self.config.plugins]
            except ConfigError as exc:
                raise exc.renamed(f"services.{self.config.name}.plugins") from None
        return self._named + list(self.plugins)

    # --- reporting --------------------------------------------------------------------------

    async def _report(self, error: BaseException, where: str) -> None:
        """Tell the error handler (at most ``stop_timeout`` seconds)."""
        try:
            with trio.move_on_after(self.config.stop_timeout) as waited:
                await self.handlers.error.on_error(error, where)
            if waited.cancelled_caught:
                logger.error("the error handler took over %g s: cut", self.config.stop_timeout)
        except Exception:
            logger.exception("the error handler failed")

    async def _guarded(self, where: str, hook: Any, *args: Any, bounded: bool = True) -> None:
        """Call a handler's hook (``bounded``: for at most ``stop_timeout`` seconds); a failure
        is logged and reported, never raised."""
        limit = self.config.stop_timeout if bounded else math.inf
        try:
            with trio.move_on_after(limit) as waited:
                await hook(*args)
            if waited.cancelled_caught:
                logger.error("%s took over %g s: cut", where, limit)
                await self._report(trio.TooSlowError(f"{where} took over {limit:g} s"), where)
        except Exception as exc:
            logger.exception("%s failed", where)
            await self._report(exc, where)

    # --- running ----------------------------------------------------------------------------

    async def run(
        self,
        stopping: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until ``stopping`` is set (then stop in order) or cancelled (then stop too: the
        last hooks still run, within ``stop_timeout``).

        Raises:
            ServiceFailed: it cannot run (a token it cannot get, a refused token, retries
                exhausted, a plugin that cannot be loaded).
        """
        config = self.config
        _tag.set(config.log_tag)
        auth = self.handlers.auth
        try:
            plugins = self.all_plugins()
            token = None if auth.requires_auth else config.get_token()
            journal_dir = _journal_dir(config)
            storage = self.handlers.storage or FileStorage(
                os.path.join(journal_dir, "service-info.json")
            )
            notifications = self.handlers.notification or (
                DesktopNotifications(config.log_tag) if config.notifications else LogNotifications()
            )
            async with open_realtime(
                config.url,
                journal_dir=journal_dir,
                token=token,
                auth=_TokenFromHandler(self) if auth.requires_auth else None,
                config=config.realtime_config(),
            ) as conn:
                context = ServiceContext(config, conn, storage, notifications)
                await self._serve(context, plugins, stopping, task_status)
        except RealtimeError as exc:
            refused = isinstance(exc, AuthenticationFailed)
            with trio.CancelScope(shield=True):
                if refused:
                    await self._guarded("auth handler", auth.on_auth_failure, str(exc))
                await self._report(exc, "auth" if refused else "connection")
            raise ServiceFailed(config.name, exc) from None
        logger.info("stopped")

    async def _serve(
        self,
        context: ServiceContext,
        plugins: list[Plugin],
        stopping: trio.Event,
        task_status: trio.TaskStatus[None],
    ) -> None:
        config = self.config
        conn = context.connection
        for channel in config.channels:
            await conn.subscribe(channel)
        self._runners = [
            PluginRunner(
                plugin,
                context=context,
                inbox_size=config.plugin_inbox_size,
                policy=config.plugin_failure,
                max_restarts=config.plugin_max_restarts,
                timeout=config.stop_timeout,
                report=self._report,
            )
            for plugin in plugins
        ]
        lifecycle = self.handlers.lifecycle
        async with trio.open_nursery() as plugin_tasks:
            try:
                for runner in self._runners:
                    if await runner.initialize():
                        plugin_tasks.start_soon(runner.run)
                for runner in self._runners:
                    runner.hook("on_service_started")
                await self._guarded("lifecycle handler", lifecycle.on_service_started, config.name)
                logger.info("started (%s profile, %s)", config.profile, config.url)
                self._started = True
                task_status.started()
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._notifier, context)
                    nursery.start_soon(self._dispatch, context)
                    nursery.start_soon(self._watch_states, context)
                    nursery.start_soon(self._heartbeats, context)
                    await stopping.wait()
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop(plugin_tasks)

    async def _stop(self, plugin_tasks: trio.Nursery) -> None:
        """The last hooks, in order: connection down (if it was up), service stopped, then
        dispose. The plugins get ``stop_timeout`` seconds together to finish their inboxes and
        hooks (then they are cancelled), and another ``stop_timeout`` for ``dispose`` and the
        lifecycle handler's last hook."""
        config = self.config
        was_connected, self._connected = self._connected, False
        for runner in self._runners:  # every plugin's last hooks queued before any handler runs
            if was_connected:
                runner.hook("on_connection_changed", False)
            runner.hook("on_service_stopped")
            runner.close()
        with trio.move_on_after(config.stop_timeout):
            async with trio.open_nursery() as finishing:
                if was_connected:
                    finishing.start_soon(
                        functools.partial(
                            self._guarded,
                            "lifecycle handler",
                            self.handlers.lifecycle.on_connection_changed,
                            config.name,
                            False,
                            bounded=False,
                        )
                    )
                for runner in self._runners:
                    finishing.start_soon(runner.wait_finished)
        for runner in self._runners:
            runner.cancel()
        for runner in self._runners:
            await runner.wait_finished()  # a cancelled plugin unwinds before its dispose
        plugin_tasks.cancel_scope.cancel()
        async with trio.open_nursery() as disposing:  # each bounded by stop_timeout itself
            for runner in self._runners:
                disposing.start_soon(runner.dispose)
            if self._started:
                disposing.start_soon(
                    self._guarded,
                    "lifecycle handler",
                    self.handlers.lifecycle.on_service_stopped,
                    config.name,
                )

    async def _connection_changed(self, connected: bool) -> None:
        self._connected = connected
        for runner in self._runners:
            runner.hook("on_connection_changed", connected)
        await self._guarded(
            "lifecycle handler",
            self.handlers.lifecycle.on_connection_changed,
            self.config.name,
            connected,
        )

    async def _watch_states(self, context: ServiceContext) -> None:
        handlers = self.handlers
        config = self.config
        was_up = False
        async for state in context.connection.states():
            logger.info("connection %s", state.value)
            if state is ConnectionState.FAILED:
                context.connection.check_open()  # raises why: the service stops with it
            up = state is ConnectionState.CONNECTED
            if up == was_up:
                continue
            was_up = up
            await self._connection_changed(up)
            if up:
                if handlers.auth.requires_auth:
                    await self._guarded("auth handler", handlers.auth.on_auth_success)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                await self._guarded("storage", context.storage.store, "last_connected", stamp)
                await self._guarded("storage", context.storage.store, "url", config.url)
            elif config.notifications:
                self._notify(config.log_tag, "connection lost")

    def _notify(self, title: str, body: str) -> None:
        """Queue a notification (dropped, and logged, if 100 are waiting already)."""
        if self._notices is None:
            return
        try:
            self._notices.send_nowait((title, body))
        except trio.WouldBlock:
            logger.warning("notifications are 100 behind: dropped %r", title)

    async def _notifier(
        self, context: ServiceContext, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Show notifications one by one, off the message path."""
        send, receive = trio.open_memory_channel[tuple[str, str]](100)
        self._notices = send
        task_status.started()
        async for title, body in receive:
            await self._guarded("notifications", context.notify, title, body)

    async def _heartbeats(self, context: ServiceContext) -> None:
        interval = context.connection.config.heartbeat_interval
        while True:
            await trio.sleep(interval)
            if self._connected:
                await self._guarded(
                    "heartbeat handler",
                    self.handlers.heartbeat.on_heartbeat,
                    context.connection.metrics,
                )

    async def _dispatch(self, context: ServiceContext) -> None:
        """Every message, in order, through the plugins that want it, then to the message
        handler unless consumed. A message counts as processed (``conn.messages()``) once every
        plugin that wanted it answered or was passed by, and the handler returned."""
        config = self.config
        async for item in context.connection.messages():
            if isinstance(item, Gap):
                logger.warning("history lost: %s", item)
                await self._report(RealtimeError(f"history lost: {item}"), "connection")
                continue
            if await self._offer(item):
                continue
            await self._guarded(
                "message handler", self.handlers.message.handle_message, item, bounded=False
            )
            if config.notifications:
                self._notify(*_notification(config.log_tag, item))

    async def _offer(self, message: Message) -> bool:
        """Whether a plugin consumed ``message``. A plugin's answer is awaited at most
        ``plugin_timeout`` seconds; one that did not answer in time is passed by (its answers
        not awaited) until it has caught up with its inbox."""
        timeout = self.config.plugin_timeout
        for runner in self._runners:
            if not runner.wants(message):
                continue
            offer = runner.offer(message)
            if offer is None or runner.behind:
                continue
            with trio.move_on_after(timeout):
                await offer.done.wait()
            if not offer.done.is_set():
                runner.behind = True
                logger.warning(
                    "plugin %s did not answer within %g s (%s #%d): not waited for until it "
                    "catches up",
                    runner.name,
                    timeout,
                    message.channel,
                    message.offset,
                )
            elif offer.consumed:
                return True
        return False


def _notification(tag: str, message: Message) -> tuple[str, str]:
    preview = repr(message.payload)
    if len(preview) > 120:
        preview = preview[:117] + "..."
    return f"{tag}: {message.channel}", f"{message.event}: {preview}"


def check_services(services: Sequence[Service]) -> None:
    """What :func:`run_services` checks before anything runs (``trio-realtime run --check``
    too): unique names, every plugin loaded, every ``token_env`` set.

    Raises:
        ConfigError: naming ``services.NAME.KEY`` (``services`` for names used twice).
    """
    names = [s.config.name for s in services]
    if len(set(names)) != len(names):
        raise ConfigError("services", f"service names must be unique, got {names}")
    for service in services:
        service.all_plugins()
        if not service.handlers.auth.requires_auth:
            try:
                service.config.get_token()
            except ConfigError as exc:
                raise exc.renamed(f"services.{service.config.name}.{exc.option}") from None


async def run_services(
    services: Sequence[Service | ServiceConfig],
    *,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``services`` side by side until cancelled (or, with ``handle_signals``, until SIGTERM
    or SIGINT): then each stops in order (its plugins' last hooks, then its connection waits its
    ``close_grace_period`` for pending events to be acked; what is still pending stays in its
    journal for the next run). ``task_status.started()`` once every service has started.

    A service that fails for good (:class:`ServiceFailed`: its token refused, say) is logged and
    reported to its error handler; the others go on. Once every service has stopped, the first
    such failure is raised.

    Raises:
        ConfigError: before anything runs: two services share a name, a plugin cannot be
            loaded, or the environment variable of a ``token_env`` is not set.
        ServiceFailed: once every service has stopped, if one failed.
    """
    wrapped = [s if isinstance(s, Service) else Service(s) for s in services]
    check_services(wrapped)
    stopping = trio.Event()
    failures: list[ServiceFailed] = []
    all_started = trio.Event()
    waiting = len(wrapped)

    async def one(service: Service, task_status: trio.TaskStatus[None]) -> None:
        try:
            await service.run(stopping, task_status=task_status)
        except ServiceFailed as exc:
            logger.error("%s", exc)
            failures.append(exc)
            if not service._started:
                task_status.started()

    async def start(running: trio.Nursery, service: Service) -> None:
        nonlocal waiting
        await running.start(one, service)
        waiting -= 1
        if not waiting:
            all_started.set()

    with single_error():
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(_stop_on_signal, stopping)
            async with trio.open_nursery() as running:
                for service in wrapped:  # side by side: a slow start holds up no other
                    running.start_soon(start, running, service)
                if wrapped:
                    await all_started.wait()
                task_status.started()
            nursery.cancel_scope.cancel()
    if failures:
        raise failures[0]


async def _stop_on_signal(
    stopping: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            logger.info("%s: stopping the services", signal.Signals(signum).name)
            stopping.set()
            return
