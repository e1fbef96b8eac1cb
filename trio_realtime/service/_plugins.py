"""Plugins: what a service runs beside its connection, each in a task of its own with a bounded
inbox, so that a slow or failing plugin holds up neither the connection nor the others.

A plugin is any object with the methods of :class:`Plugin` (subclass :class:`BasePlugin` to get
the ones you do not need as no-ops), or an :class:`EventPlugin` built with decorators. Plugins
are named in a services file by entry point (group ``trio_realtime.plugins``) or as
``package.module:attribute``.
"""

from __future__ import annotations

import collections
import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import trio

from .._errors import ConfigError
from .._protocol import Message

if TYPE_CHECKING:
    from ._run import ServiceContext

__all__ = [
    "ENTRY_POINT_GROUP",
    "BasePlugin",
    "EventPlugin",
    "Plugin",
    "load_plugin",
]

logger = logging.getLogger("trio_realtime.service")

#: The entry point group plugins are found in (``[project.entry-points."trio_realtime.plugins"]``).
ENTRY_POINT_GROUP = "trio_realtime.plugins"


@runtime_checkable
class Plugin(Protocol):
    """What a service calls on a plugin, in this order, each hook once: ``initialize``,
    ``on_service_started``, then ``on_connection_changed(True)`` / ``(False)`` at every change
    (the last ``False`` before ``on_service_stopped`` if the connection was up), messages in
    between, then ``on_service_stopped`` and ``dispose``."""

    name: str
    supported_message_types: Collection[str]
    """Event names it wants (``message.event``); empty: every event."""

    async def initialize(self, context: ServiceContext) -> None: ...

    async def handle_message(self, message: Message) -> bool:
        """Handle ``message``; return True to consume it (later plugins and the service's
        message handler do not see it)."""
        ...

    async def on_connection_changed(self, connected: bool) -> None: ...

    async def on_service_started(self) -> None: ...

    async def on_service_stopped(self) -> None: ...

    async def dispose(self) -> None: ...


class BasePlugin:
    """A plugin that does nothing: subclass it and override what you need."""

    name: str = "plugin"
    supported_message_types: Collection[str] = ()

    async def initialize(self, context: ServiceContext) -> None:
        await trio.lowlevel.checkpoint()

    async def handle_message(self, message: Message) -> bool:
        await trio.lowlevel.checkpoint()
        return False

    async def on_connection_changed(self, connected: bool) -> None:
        await trio.lowlevel.checkpoint()

    async def on_service_started(self) -> None:
        await trio.lowlevel.checkpoint()

    async def on_service_stopped(self) -> None:
        await trio.lowlevel.checkpoint()

    async def dispose(self) -> None:
        await trio.lowlevel.checkpoint()


MessageCallback = Callable[[Message], Awaitable[bool | None]]
HookCallback = Callable[[], Awaitable[None]]


class EventPlugin(BasePlugin):
    """A plugin made of decorated functions::

        audit = EventPlugin("audit")

        @audit.on("chat_message", "user_status")
        async def record(message: Message) -> bool:
            ...
            return False  # True: consumed

        @audit.connection_changed
        async def changed(connected: bool) -> None: ...

    ``@audit.started`` and ``@audit.stopped`` decorate the service hooks. A callback that
    returns ``None`` does not consume the message. Its
    ``supported_message_types`` are the event names of its ``on`` callbacks (``on()`` with no
    name: every event)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.context: ServiceContext | None = None
        """The service it runs in (set by ``initialize``)."""
        self._handlers: dict[str | None, list[MessageCallback]] = {}
        self._hooks: dict[str, list[Callable[..., Awaitable[None]]]] = {}

    def on(self, *events: str) -> Callable[[MessageCallback], MessageCallback]:
        """Call the decorated ``async def f(message) -> bool | None`` for these events (none
        given: for every event)."""

        def register(function: MessageCallback) -> MessageCallback:
            if not inspect.iscoroutinefunction(function):
                raise TypeError(f"{function!r} must be an async function")
            for event in events or (None,):
                self._handlers.setdefault(event, []).append(function)
            names = () if None in self._handlers else tuple(self._handlers)
            self.supported_message_types = tuple(n for n in names if n is not None)
            return function

        return register

    def _hook(self, hook: str, function: Callable[..., Awaitable[None]]) -> Any:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"{function!r} must be an async function")
        self._hooks.setdefault(hook, []).append(function)
        return function

    def connection_changed(
        self, function: Callable[[bool], Awaitable[None]]
    ) -> Callable[[bool], Awaitable[None]]:
        """Decorate ``async def f(connected: bool)``: called at every connection change."""
        return self._hook("on_connection_changed", function)  # type: ignore[no-any-return]

    def started(self, function: HookCallback) -> HookCallback:
        """Decorate ``async def f()``: called once the service started."""
        return self._hook("on_service_started", function)  # type: ignore[no-any-return]

    def stopped(self, function: HookCallback) -> HookCallback:
        """Decorate ``async def f()``: called once as the service stops."""
        return self._hook("on_service_stopped", function)  # type: ignore[no-any-return]

    async def _run_hooks(self, hook: str, *args: Any) -> None:
        for function in self._hooks.get(hook, ()):
            await function(*args)
        await trio.lowlevel.checkpoint()

    async def initialize(self, context: ServiceContext) -> None:
        self.context = context
        await trio.lowlevel.checkpoint()

    async def handle_message(self, message: Message) -> bool:
        for function in (*self._handlers.get(message.event, ()), *self._handlers.get(None, ())):
            if await function(message):
                return True
        await trio.lowlevel.checkpoint()
        return False

    async def on_connection_changed(self, connected: bool) -> None:
        await self._run_hooks("on_connection_changed", connected)

    async def on_service_started(self) -> None:
        await self._run_hooks("on_service_started")

    async def on_service_stopped(self) -> None:
        await self._run_hooks("on_service_stopped")


def load_plugin(name: str) -> Plugin:
    """The plugin ``name`` names: an entry point of the group ``trio_realtime.plugins``, or
    ``package.module:attribute``. What it points at is a plugin object, or a class or function
    that makes one when called with no arguments.

    Raises:
        ConfigError: no such plugin, it failed to load, or what it made is not a plugin.
    """
    target: Any
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            target = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except Exception as exc:
            raise ConfigError("plugins", f"cannot load plugin {name!r}: {exc}") from None
    else:
        found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        matching = [ep for ep in found if ep.name == name]
        if not matching:
            known = ", ".join(sorted({ep.name for ep in found})) or "none installed"
            raise ConfigError(
                "plugins",
                f"no plugin {name!r} in the entry point group {ENTRY_POINT_GROUP} "
                f"(found: {known}); or name one as 'package.module:attribute'",
            )
        try:
            target = matching[0].load()
        except Exception as exc:
            raise ConfigError("plugins", f"cannot load plugin {name!r}: {exc}") from None
    if isinstance(target, type) or (callable(target) and not isinstance(target, Plugin)):
        try:
            target = target()
        except Exception as exc:
            raise ConfigError("plugins", f"making plugin {name!r} failed: {exc}") from None
    if not isinstance(target, Plugin):
        raise ConfigError(
            "plugins",
            f"{name!r} is not a plugin (it needs the methods of trio_realtime.service.Plugin)",
        )
    return target


# --- running one plugin -------------------------------------------------------------------------


@attrs.define(eq=False)
class _Offer:
    """A message offered to a plugin, and its answer."""

    message: Message
    done: trio.Event = attrs.Factory(trio.Event)
    consumed: bool = False


_Item = _Offer | tuple[str, tuple[Any, ...]]


class PluginRunner:
    """One plugin's life in a service: its ``initialize``, a task that takes messages and hooks
    from its inbox in order, and its ``dispose``.

    Messages beyond ``inbox_size`` waiting are refused (the plugin misses them: logged when it
    starts and when it stops missing). Hooks are always queued, a connection change cancelling
    an opposite one still waiting (so a plugin stuck while the link flaps holds two at most).
    A failure is logged and reported; the plugin is then restarted (``dispose``, ``initialize``,
    ``on_service_started`` and the current connection state again: a new life) up to
    ``max_restarts`` times, or disabled and disposed (``policy="disable"``, or while stopping).
    ``initialize`` and ``dispose`` are given ``timeout`` seconds each."""

    def __init__(
        self,
        plugin: Plugin,
        *,
        context: ServiceContext,
        inbox_size: int,
        policy: str,
        max_restarts: int,
        timeout: float,
        report: Callable[[BaseException, str], Awaitable[None]],
    ) -> None:
        self.plugin = plugin
        self.name = str(getattr(plugin, "name", type(plugin).__name__))
        self._context = context
        self._inbox: collections.deque[_Item] = collections.deque()
        self._queued_messages = 0
        self.pending = 0
        """Messages queued or being handled."""
        self._inbox_size = inbox_size
        self._more = trio.Event()
        self._policy = policy
        self._max_restarts = max_restarts
        self._timeout = timeout
        self._report = report
        self.restarts = 0
        self.refused = 0
        """Messages it missed because its inbox was full."""
        self._missing = 0
        self.behind = False
        """It did not answer in time: messages are queued for it without waiting for its
        answer until it has none left."""
        self.initialized = False
        """``initialize`` returned (a ``dispose`` is owed)."""
        self.enabled = False
        """Takes messages and hooks (from ``initialize`` until it finished or was disabled)."""
        self.started = False
        self._closing = False
        self._finished = trio.Event()
        self._scope = trio.CancelScope(shield=True)
        self._told_connected = False
        types = plugin.supported_message_types
        if isinstance(types, str):
            types = (types,)
        self._types = frozenset(types) if types else None

    def wants(self, message: Message) -> bool:
        return self.enabled and (self._types is None or message.event in self._types)

    async def initialize(self) -> bool:
        """Call ``initialize`` (at most ``timeout`` seconds); whether it succeeded."""
        try:
            with trio.fail_after(self._timeout):
                await self.plugin.initialize(self._context)
        except (Exception, trio.TooSlowError) as exc:
            logger.error("plugin %s failed to initialize: disabled", self.name, exc_info=exc)
            await self._report(exc, f"plugin {self.name}")
            self.enabled = False
            return False
        self.initialized = self.enabled = True
        return True

    async def dispose(self) -> None:
        """Call ``dispose`` once, if ``initialize`` succeeded (at most ``timeout`` seconds)."""
        if not self.initialized:
            return
        self.initialized = False
        try:
            with trio.move_on_after(self._timeout) as waited:
                await self.plugin.dispose()
            if waited.cancelled_caught:
                logger.error("plugin %s: dispose took over %g s: cut", self.name, self._timeout)
        except Exception as failure:
            logger.error("plugin %s: dispose failed", self.name, exc_info=failure)
            await self._report(failure, f"plugin {self.name} dispose")

    def offer(self, message: Message) -> _Offer | None:
        """Queue ``message``; ``None`` if the plugin is disabled or its inbox is full."""
        if not self.enabled or self._closing:
            return None
        if self._queued_messages >= self._inbox_size:
            self.refused += 1
            if not self._missing:
                logger.warning(
                    "plugin %s has %d messages waiting: it misses those from %s #%d on",
                    self.name,
                    self._queued_messages,
                    message.channel,
                    message.offset,
                )
            self._missing += 1
            return None
        if self._missing:
            logger.warning(
                "plugin %s takes messages again (from %s #%d), after missing %d",
                self.name,
                message.channel,
                message.offset,
                self._missing,
            )
            self._missing = 0
        offer = _Offer(message)
        self._queued_messages += 1
        self.pending += 1
        self._inbox.append(offer)
        self._more.set()
        return offer

    def hook(self, hook: str, *args: Any) -> None:
        """Queue a lifecycle hook (never refused while the plugin runs)."""
        if not self.enabled or self._closing:
            return
        inbox = self._inbox
        if hook == "on_connection_changed" and inbox:
            last = inbox[-1]
            if not isinstance(last, _Offer) and last == (hook, (not args[0],)):
                inbox.pop()  # it never saw the opposite change: both cancel out
                return
        inbox.append((hook, args))
        self._more.set()

    def close(self) -> None:
        """No more items: the task returns once the inbox is empty."""
        self._closing = True
        self._more.set()

    async def wait_finished(self) -> None:
        if self.started:
            await self._finished.wait()
        else:
            await trio.lowlevel.checkpoint()

    def cancel(self) -> None:
        """Stop at once (the service gave it its time)."""
        self._scope.cancel()

    async def run(self) -> None:
        """Until :meth:`close` and an empty inbox, or :meth:`cancel`: shielded from the
        service's own cancellation, so that the last hooks run even then."""
        self.started = True
        try:
            with self._scope:
                while self.enabled:
                    try:
                        await self._serve()
                        return
                    except Exception as exc:
                        await self._failed(exc)
        finally:
            self.enabled = False
            for item in self._inbox:
                if isinstance(item, _Offer):
                    item.done.set()
            self._inbox.clear()
            self._finished.set()

    async def _serve(self) -> None:
        while True:
            while not self._inbox:
                if self._closing:
                    return
                await self._more.wait()
                self._more = trio.Event()
            item = self._inbox.popleft()
            if isinstance(item, _Offer):
                self._queued_messages -= 1
                try:
                    item.consumed = bool(await self.plugin.handle_message(item.message))
                finally:
                    item.done.set()
                    self.pending -= 1
                    if self.behind and not self.pending:
                        self.behind = False
                        logger.warning("plugin %s caught up", self.name)
            else:
                hook, args = item
                if hook == "on_connection_changed":
                    self._told_connected = args[0]
                await getattr(self.plugin, hook)(*args)

    async def _failed(self, exc: Exception) -> None:
        await self._report(exc, f"plugin {self.name}")
        if self._closing or self._policy != "restart" or self.restarts >= self._max_restarts:
            logger.error("plugin %s failed: disabled", self.name, exc_info=exc)
            self.enabled = False
            await self.dispose()
            return
        self.restarts += 1
        logger.error(
            "plugin %s failed: restarting it (%d of %d)",
            self.name,
            self.restarts,
            self._max_restarts,
            exc_info=exc,
        )
        await self.dispose()
        if not await self.initialize():
            return
        # A new life: it is told again that the service runs, and the state of the connection
        # as of where its inbox resumes.
        if self._told_connected:
            self._inbox.appendleft(("on_connection_changed", (True,)))
        self._inbox.appendleft(("on_service_started", ()))
