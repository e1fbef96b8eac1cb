"""A service's handlers: what it does with a message no plugin consumed, where it keeps its
connection info, how it notifies, authenticates, and reports errors, lifecycle changes and
heartbeats. Each is a small protocol with a default; give your own to :class:`Service`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from typing import Protocol, runtime_checkable

import attrs
import trio

from .._metrics import Metrics
from .._protocol import Message

__all__ = [
    "AuthHandler",
    "DesktopNotifications",
    "ErrorHandler",
    "FileStorage",
    "HeartbeatHandler",
    "LifecycleHandler",
    "LogErrors",
    "LogNotifications",
    "MessageHandler",
    "NotificationHandler",
    "ServiceHandlers",
    "ServiceStorage",
]

logger = logging.getLogger("trio_realtime.service")


@runtime_checkable
class MessageHandler(Protocol):
    """The default handler: gets every message no plugin consumed, in order."""

    async def handle_message(self, message: Message) -> None: ...


@runtime_checkable
class ServiceStorage(Protocol):
    """Where a service keeps its connection info (strings by key): the last URL, when it last
    connected, and whatever plugins keep there (``context.storage``)."""

    async def store(self, key: str, value: str) -> None: ...

    async def get(self, key: str) -> str | None: ...

    async def clear(self) -> None: ...


@runtime_checkable
class NotificationHandler(Protocol):
    async def notify(self, title: str, body: str) -> None: ...


@runtime_checkable
class AuthHandler(Protocol):
    """Supplies the service's token. With ``requires_auth`` false the service connects with
    none. ``get_auth_data`` is asked before each connection attempt that needs a token (and
    again after the server refused one); ``on_auth_success`` is called each time the server
    accepted the token (every connect), ``on_auth_failure`` when it refused for good (the
    service stops)."""

    requires_auth: bool

    async def get_auth_data(self) -> str: ...

    async def on_auth_success(self) -> None: ...

    async def on_auth_failure(self, error: str) -> None: ...


@runtime_checkable
class LifecycleHandler(Protocol):
    async def on_service_started(self, name: str) -> None: ...

    async def on_connection_changed(self, name: str, connected: bool) -> None: ...

    async def on_service_stopped(self, name: str) -> None: ...


@runtime_checkable
class ErrorHandler(Protocol):
    async def on_error(self, error: BaseException, where: str) -> None:
        """``error`` happened in ``where`` (``"plugin audit"``, ``"message handler"``,
        ``"auth"``, ``"connection"``, ...)."""
        ...


@runtime_checkable
class HeartbeatHandler(Protocol):
    """Called every heartbeat interval while connected, with the connection's metrics (the
    connection runs the protocol's heartbeat itself: a silent link is dropped and resumed)."""

    async def on_heartbeat(self, metrics: Metrics) -> None: ...


# --- defaults -----------------------------------------------------------------------------------


class _LogMessages:
    async def handle_message(self, message: Message) -> None:
        logger.debug("%s #%d: %s", message.channel, message.offset, message.event)
        await trio.lowlevel.checkpoint()


class FileStorage:
    """Connection info in a JSON file, replaced atomically at each change (a value stored again
    unchanged writes nothing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._values: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._values is None:
            try:
                with open(self.path, encoding="utf-8") as file:
                    loaded = json.load(file)
                self._values = {str(k): str(v) for k, v in loaded.items()}
            except (OSError, ValueError, AttributeError):
                self._values = {}
        return self._values

    def _save(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, staged = tempfile.mkstemp(dir=directory, prefix=".service-info.")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(self._load(), file, indent=1, sort_keys=True)
        os.replace(staged, self.path)

    async def store(self, key: str, value: str) -> None:
        values = self._load()
        if values.get(key) == value:
            await trio.lowlevel.checkpoint()  # unchanged (the url at each connect): no rewrite
            return
        values[key] = value
        await trio.to_thread.run_sync(self._save)

    async def get(self, key: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._load().get(key)

    async def clear(self) -> None:
        self._load().clear()
        await trio.to_thread.run_sync(self._save)


class LogNotifications:
    """Notifications as log records (the default)."""

    async def notify(self, title: str, body: str) -> None:
        logger.info("notification: %s: %s", title, body)
        await trio.lowlevel.checkpoint()


class DesktopNotifications:
    """Desktop notifications through ``notify-send`` (libnotify), and a log record where it is
    not installed or fails."""

    def __init__(self, app_name: str = "trio-realtime") -> None:
        self.app_name = app_name
        self.command = shutil.which("notify-send")

    async def notify(self, title: str, body: str) -> None:
        if self.command is not None:
            try:
                await trio.run_process(
                    [self.command, "--app-name", self.app_name, title, body],
                    capture_stdout=True,
                    capture_stderr=True,
                )
                return
            except (OSError, subprocess.CalledProcessError) as exc:
                logger.info("notify-send failed (%s): logging instead", exc)
        logger.info("notification: %s: %s", title, body)


class _NoAuth:
    requires_auth = False

    async def get_auth_data(self) -> str:
        raise RuntimeError("no auth handler")  # never called: requires_auth is False

    async def on_auth_success(self) -> None:
        await trio.lowlevel.checkpoint()

    async def on_auth_failure(self, error: str) -> None:
        await trio.lowlevel.checkpoint()


class _NoLifecycle:
    async def on_service_started(self, name: str) -> None:
        await trio.lowlevel.checkpoint()

    async def on_connection_changed(self, name: str, connected: bool) -> None:
        await trio.lowlevel.checkpoint()

    async def on_service_stopped(self, name: str) -> None:
        await trio.lowlevel.checkpoint()


class LogErrors:
    """Errors as log records (the default)."""

    async def on_error(self, error: BaseException, where: str) -> None:
        logger.debug("error in %s: %r", where, error)
        await trio.lowlevel.checkpoint()


class _NoHeartbeat:
    async def on_heartbeat(self, metrics: Metrics) -> None:
        await trio.lowlevel.checkpoint()


@attrs.frozen(kw_only=True)
class ServiceHandlers:
    """A service's handlers; each left out takes its default."""

    message: MessageHandler = attrs.field(factory=_LogMessages)
    storage: ServiceStorage | None = None
    """Default: :class:`FileStorage` of ``service-info.json`` in the service's journal
    directory."""
    notification: NotificationHandler | None = None
    """Default: :class:`DesktopNotifications` if the service has ``notifications = true``,
    else :class:`LogNotifications`."""
    auth: AuthHandler = attrs.field(factory=_NoAuth)
    lifecycle: LifecycleHandler = attrs.field(factory=_NoLifecycle)
    error: ErrorHandler = attrs.field(factory=LogErrors)
    heartbeat: HeartbeatHandler = attrs.field(factory=_NoHeartbeat)
