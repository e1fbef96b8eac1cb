"""Server halves of services, by meta kind: presence, typing and read receipts, and whatever
:func:`register_handler` adds from outside the package.

A handler gets the meta frames of the kinds it declares (``frames``), each with a
:class:`MetaContext` (who sent it, and what the handler may do about it: answer, broadcast to a
channel's subscribers, ask the authenticator, use the store). The engine checks the channel name
and that the sender may subscribe to the channel before calling it. Handlers also hear of a
channel going live for a connection (``attached``: the frame to send it then, such as the full
presence state), of a user publishing (``published``), and of a connection going away
(``disconnected``); ``run`` is their background task (the presence grace-period timer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson
import trio

from .._protocol import (
    Error,
    ErrorCode,
    PresenceUpdate,
    ReadReceipt,
    Receipts,
    ReceiptsQuery,
    Typing,
    check_payload,
)
from ._auth import Action, Identity
from ._config import ServerConfig
from ._meta import PresenceRegistry, TypingRegistry
from ._store import Store

if TYPE_CHECKING:
    from ._engine import RealtimeServer

__all__ = [
    "BaseHandler",
    "Handler",
    "HandlerFactory",
    "MetaContext",
    "PresenceHandler",
    "ReceiptsHandler",
    "TypingHandler",
    "register_handler",
]


class MetaContext(Protocol):
    """What a handler sees of the connection a meta frame came from, and of the server."""

    @property
    def identity(self) -> Identity: ...

    @property
    def connection(self) -> Hashable:
        """This connection (a key for per-connection state; it is gone after
        :meth:`Handler.disconnected`)."""

    @property
    def config(self) -> ServerConfig: ...

    @property
    def store(self) -> Store: ...

    def send(self, frame: object) -> None:
        """Send ``frame`` to this connection."""

    def broadcast(self, channel: str, frame: object, *, skip_user: str | None = None) -> None:
        """Send ``frame`` to every connection subscribed to ``channel`` (but ``skip_user``'s)."""

    async def authorize(self, action: Action, channel: str) -> bool: ...


class Handler(Protocol):
    """The server half of a service (see the module docstring)."""

    frames: ClassVar[tuple[type, ...]]
    """The client frame types it handles (meta frames)."""

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None: ...

    async def handle(self, context: MetaContext, frame: Any) -> None: ...

    def attached(self, channel: str) -> object | None: ...

    def published(self, user: str, channel: str) -> None: ...

    def disconnected(self, context: MetaContext) -> None: ...


#: Makes a server's handler (one per server, which keeps its state).
HandlerFactory = Callable[["RealtimeServer"], Handler]

_FACTORIES: list[HandlerFactory] = []


def register_handler(factory: HandlerFactory) -> None:
    """Give every server started from now on a handler made by ``factory(server)``."""
    _FACTORIES.append(factory)


def make_handlers(server: RealtimeServer) -> list[Handler]:
    return [factory(server) for factory in _FACTORIES]


class BaseHandler:
    """Hooks that do nothing, for handlers to override."""

    frames: ClassVar[tuple[type, ...]] = ()

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    async def handle(self, context: MetaContext, frame: Any) -> None:
        await trio.lowlevel.checkpoint()

    def attached(self, channel: str) -> object | None:
        return None

    def published(self, user: str, channel: str) -> None:
        pass

    def disconnected(self, context: MetaContext) -> None:
        pass


class PresenceHandler(BaseHandler):
    """Presence (PROTOCOL.md section 5): kept per connection with a grace period, shown per user;
    the full state when a channel goes live for a connection, then diffs."""

    frames: ClassVar[tuple[type, ...]] = (PresenceUpdate,)

    def __init__(self, server: RealtimeServer) -> None:
        config = server.config
        self.registry = PresenceRegistry(config.presence_timeout, config.max_presence_entries)
        self._changed = trio.Event()
        self._broadcast = server.broadcast

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            deadline = self.registry.next_expiry()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._changed.wait()
            self._changed = trio.Event()
            for diff in self.registry.expire(trio.current_time()):
                self._broadcast(diff.channel, diff)

    def _refusal(self, context: MetaContext, frame: PresenceUpdate) -> str | None:
        """Why an update is refused, or ``None``: metadata is bounded in depth and bytes, and a
        user in channels, so that the presence state always encodes."""
        config = context.config
        reason = check_payload(frame.metadata, max_depth=config.max_payload_depth)
        if reason is not None:
            return f"metadata: {reason}"
        if len(orjson.dumps(frame.metadata)) > config.max_presence_bytes:
            return f"metadata is over {config.max_presence_bytes} bytes"
        if not self.registry.allows(context.connection, context.identity.user, frame.channel):
            return f"present in at most {config.max_presence_entries} channels per user"
        return None

    async def handle(self, context: MetaContext, frame: PresenceUpdate) -> None:
        await trio.lowlevel.checkpoint()
        reason = self._refusal(context, frame)
        if reason is not None:
            context.send(Error(ErrorCode.PRESENCE_LIMIT, reason))
            return
        user = context.identity.user
        diff = self.registry.update(
            context.connection, user, frame.channel, frame.status, frame.metadata
        )
        if diff is not None:
            context.broadcast(frame.channel, diff)

    def attached(self, channel: str) -> object | None:
        return self.registry.state(channel)

    def disconnected(self, context: MetaContext) -> None:
        self.registry.disconnected(context.connection, trio.current_time())
        self._changed.set()


class TypingHandler(BaseHandler):
    """Typing indicators: relayed to the channel's other subscribers; ``typing: false`` for a
    typist whose connection went away; cleared when the typist publishes to the channel."""

    frames: ClassVar[tuple[type, ...]] = (Typing,)

    def __init__(self, server: RealtimeServer) -> None:
        self.registry = TypingRegistry()
        self._broadcast = server.broadcast

    async def handle(self, context: MetaContext, frame: Typing) -> None:
        await trio.lowlevel.checkpoint()
        user = context.identity.user
        limit = context.config.max_subscriptions
        connection = context.connection
        if (
            frame.typing
            and self.registry.count(connection) >= limit
            and not self.registry.holds(connection, user, frame.channel)
        ):
            context.send(Error(ErrorCode.TYPING_LIMIT, f"typing in at most {limit} channels"))
        elif self.registry.set(connection, user, frame.channel, frame.typing):
            context.broadcast(
                frame.channel, Typing(frame.channel, frame.typing, user), skip_user=user
            )

    def published(self, user: str, channel: str) -> None:
        self.registry.stopped(user, channel)

    def disconnected(self, context: MetaContext) -> None:
        for channel, user in self.registry.disconnected(context.connection):
            self._broadcast(channel, Typing(channel, False, user), skip_user=user)


class ReceiptsHandler(BaseHandler):
    """Read receipts: a watermark per reader and channel, stored, relayed to the channel."""

    frames: ClassVar[tuple[type, ...]] = (ReadReceipt, ReceiptsQuery)

    async def handle(self, context: MetaContext, frame: ReadReceipt | ReceiptsQuery) -> None:
        store = context.store
        channel = frame.channel
        if isinstance(frame, ReceiptsQuery):
            context.send(Receipts(frame.rid, channel, await store.receipts(channel)))
            return
        info = (await store.load(channels=(channel,))).channel(channel)
        if not 1 <= frame.offset <= info.head:  # so no row is kept for a name never used
            message = f"{channel!r} has no offset {frame.offset}"
            context.send(Error(ErrorCode.INVALID_RECEIPT, message))
        elif await store.mark_read(channel, context.identity.user, frame.offset):
            context.broadcast(channel, ReadReceipt(channel, frame.offset, context.identity.user))


def _receipts(server: RealtimeServer) -> Handler:
    return ReceiptsHandler()


register_handler(PresenceHandler)
register_handler(TypingHandler)
register_handler(_receipts)
