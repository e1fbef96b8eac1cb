"""Server halves of services, by meta kind: presence, typing and read receipts, and whatever
:func:`register_handler` adds from outside the package.

A handler gets the meta frames of the kinds it declares (``frames``: client frames that have a
``channel``), each with a :class:`MetaContext` (who sent it, and what the handler may do about it:
answer, broadcast to a channel's subscribers, ask the authenticator, use the store). The engine
checks the channel name and that the sender may subscribe to the channel before calling it. Two
handlers may not claim one frame type; a client frame of a kind no handler claims is dropped.
``attached`` runs under the engine's fan-out lock: it must not wait on a commit. Handlers also hear of a
channel going live for a connection (``attached``: the frame to send it then, such as the full
presence state), of a user publishing (``published``), and of a connection going away
(``disconnected``); ``run`` is their background task (the presence grace-period timer). With a
store several nodes share, a handler may also have ``heard(channel, data)``: called with each meta
frame (encoded) another node broadcast, once delivered to this node's subscribers; and
``missed()``: called when this node watches the other nodes' notices again after a failure (it
may have missed some).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import attrs
import orjson
import trio

from .._errors import ProtocolError
from .._protocol import (
    Error,
    ErrorCode,
    PresenceDiff,
    PresenceMember,
    PresenceState,
    PresenceStatus,
    PresenceUpdate,
    ReadReceipt,
    Receipts,
    ReceiptsQuery,
    Typing,
    check_payload,
    decode_server_message,
)
from ._auth import Action, Identity
from ._config import ServerConfig
from ._meta import TypingRegistry
from ._store import PresenceEntry, SharedStore, Store

logger = logging.getLogger("trio_realtime.server")

#: Seconds before a presence change that a store failed to make is tried again.
_RETRY = 1.0

__all__ = [
    "BaseHandler",
    "Handler",
    "HandlerFactory",
    "MetaContext",
    "PresenceHandler",
    "ReceiptsHandler",
    "ServerView",
    "TypingHandler",
    "register_handler",
]


class MetaContext(Protocol):
    """What a handler sees of the connection a meta frame came from, and of the server."""

    @property
    def identity(self) -> Identity: ...

    @property
    def connection_id(self) -> str:
        """This connection's id, unique across server nodes (a key for per-connection state,
        and for rows in a shared store; it is gone after :meth:`Handler.disconnected`)."""

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

    async def attached(self, channel: str) -> object | None: ...

    def published(self, user: str, channel: str) -> None: ...

    def disconnected(self, context: MetaContext) -> None: ...


class ServerView(Protocol):
    """What a handler sees of its server (a ``RealtimeServer``) when it is made."""

    @property
    def config(self) -> ServerConfig: ...

    @property
    def store(self) -> Store: ...

    @property
    def node(self) -> str:
        """The server's id among the nodes of a shared store."""

    @property
    def shared(self) -> SharedStore | None:
        """The store, if several server nodes share it."""

    def wall_time(self) -> float:
        """Unix seconds (what the server stamps rows other nodes read with)."""

    def broadcast(
        self, channel: str, frame: object, *, skip_user: str | None = None, local: bool = False
    ) -> None:
        """Send ``frame`` to every connection subscribed to ``channel`` (but ``skip_user``'s;
        ``local``: to those of this node only, not through the other nodes of a shared store)."""

    def has_subscribers(self, channel: str) -> bool:
        """Whether connections to this node are subscribed to ``channel``."""


#: Makes a server's handler (one per server, which keeps its state).
HandlerFactory = Callable[[ServerView], Handler]

_FACTORIES: list[HandlerFactory] = []


def register_handler(factory: HandlerFactory) -> None:
    """Give every server started from now on a handler made by ``factory(server)``."""
    _FACTORIES.append(factory)


def make_handlers(server: ServerView) -> list[Handler]:
    """A server's handlers; raises ``ValueError`` if two of them claim a frame type."""
    handlers = [factory(server) for factory in _FACTORIES]
    claimed: dict[type, Handler] = {}
    for handler in handlers:
        for frame in handler.frames:
            if claimed.setdefault(frame, handler) is not handler:
                raise ValueError(f"two handlers claim {frame.__name__} frames")
    return handlers


class BaseHandler:
    """Hooks that do nothing, for handlers to override."""

    frames: ClassVar[tuple[type, ...]] = ()

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    async def handle(self, context: MetaContext, frame: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def attached(self, channel: str) -> object | None:
        await trio.lowlevel.checkpoint()
        return None

    def published(self, user: str, channel: str) -> None:
        pass

    def disconnected(self, context: MetaContext) -> None:
        pass


class PresenceHandler(BaseHandler):
    """Presence (PROTOCOL.md section 5), kept in the store (so a store shared by several server
    nodes shares it): one entry per connection and channel, shown per user (the newest entry of
    the user's); the full state when a channel goes live for a connection, then diffs. A
    connection that goes away keeps its entries for ``presence_timeout`` (the grace period: a
    client that reconnects and re-announces within it causes no leave/join flicker); a user
    leaves when their last entry is gone. This node times the grace periods of its own
    connections; with a shared store it also renews its lease, and times those of the entries
    of nodes whose lease ran out (their process died) from the lease's end."""

    frames: ClassVar[tuple[type, ...]] = (PresenceUpdate,)

    def __init__(self, server: ServerView) -> None:
        self._store = server.store
        self._config = server.config
        self._broadcast = server.broadcast
        self._has_subscribers = server.has_subscribers
        self._node = server.node
        self._shared = server.shared
        self._wall = server.wall_time
        self._reaping: set[tuple[str, str, str]] = set()
        """Entries of dead nodes this node has scheduled to leave."""
        self._mine: dict[str, dict[tuple[str, str], PresenceEntry]] = {}
        """The entries of this node's connections that have not gone away, by connection and
        (channel, user): what this node puts back if the store lost them (it was reaped)."""
        self._lease_end: float | None = None
        self._revive_until = -math.inf
        """Wall time up to which each renewal revives this node's entries (after a lapse)."""
        self._lock = trio.Lock()  # one change of presence at a time (each reads, then writes)
        self._leaving: list[tuple[float, str, str, str]] = []  # (trio time, channel, user, conn)
        self._changed = trio.Event()
        self._gone_send, self._gone = trio.open_memory_channel[str](math.inf)
        self._last_update = 0.0
        self._resync_now = trio.Event()
        self._synced: dict[str, dict[str, PresenceMember]] = {}
        """Shared store: per channel with subscribers on this node, the presence they were last
        sent whole (on going live, or by :meth:`_resync`) with this node's own changes since."""

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._departures)
            if self._shared is not None:
                await nursery.start(self._lease, self._shared)
                nursery.start_soon(self._resync)
            task_status.started()
            while True:
                deadline = self._leaving[0][0] if self._leaving else math.inf
                with trio.move_on_at(deadline):
                    await self._changed.wait()
                self._changed = trio.Event()
                now = trio.current_time()
                while self._leaving and self._leaving[0][0] <= now:
                    _, channel, user, connection = heapq.heappop(self._leaving)
                    key = (channel, user, connection)
                    try:
                        async with self._lock:
                            await self._remove(*key, revivable=key in self._reaping)
                        self._reaping.discard(key)
                    except Exception:
                        # A store that failed must not end the server: try again in a second.
                        logger.exception("presence: expiring an entry failed")
                        item = (now + _RETRY, channel, user, connection)
                        heapq.heappush(self._leaving, item)
                        break

    async def _lease(
        self, shared: SharedStore, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Renew this node's lease every third of ``node_lease``, and see to the entries of nodes
        whose lease ran out."""
        lease = self._config.node_lease
        started = False
        while True:
            try:
                until = self._wall() + lease
                leases = await shared.renew_lease(self._node, until)
                now = self._wall()
                lapsed = self._lease_end is not None and self._lease_end < now
                self._lease_end = until
                if lapsed or until < now:  # others may have taken this node for dead
                    # ... and may still act on a lease of it they read before this renewal (or
                    # one this renewal, late, wrote already expired): revive for a lease more.
                    self._revive_until = now + lease
                if now <= self._revive_until:
                    await self._revive(shared)
                # One node sees to the dead: the live one with the smallest id.
                if min(n for n, end in leases.items() if end >= now) == self._node:
                    for node, end in leases.items():
                        if end < now:
                            await self._reap(shared, node, end)
            except Exception:
                logger.exception("presence: renewing this node's lease failed")
            if not started:
                started = True
                task_status.started()
            await trio.sleep(lease / 3)

    async def _reap(self, shared: SharedStore, node: str, until: float) -> None:
        """``node`` died at ``until`` (its lease ran out): its entries leave ``presence_timeout``
        after that (sooner if they were leaving already); its lease goes with its last entry."""
        timeout = self._config.presence_timeout
        async with self._lock:
            entries = await shared.presence_of_node(node)
            if not entries:
                await shared.drop_lease(node)
                return
            wall, clock = self._wall(), trio.current_time()
            for entry in entries:
                leave_at = until + timeout
                if entry.leave_at is not None and entry.leave_at <= leave_at:
                    leave_at = entry.leave_at
                else:
                    await self._store.put_presence(attrs.evolve(entry, leave_at=leave_at))
                key = (entry.channel, entry.user, entry.connection)
                if key not in self._reaping:
                    self._reaping.add(key)
                    at = clock + max(0.0, leave_at - wall)
                    heapq.heappush(self._leaving, (at, *key))
        self._changed.set()

    async def _revive(self, shared: SharedStore) -> None:
        """This node's lease lapsed while it lived: its entries of connections still open that
        another node set leaving are present again (that node keeps them when their time
        comes), and those another node dropped already (it reaped them) are put back from what
        this node holds, their users joining again."""
        async with self._lock:
            stored = {
                (e.channel, e.user, e.connection): e
                for e in await shared.presence_of_node(self._node)
            }
            for connection, entries in list(self._mine.items()):
                for (channel, user), entry in list(entries.items()):
                    found = stored.get((channel, user, connection))
                    if found is not None:
                        if found.leave_at is not None:
                            await self._store.put_presence(attrs.evolve(found, leave_at=None))
                        continue
                    if self._mine.get(connection, {}).get((channel, user)) is not entry:
                        continue  # gone (or changed) while this ran
                    others = await self._store.presence(channel, user)
                    await self._store.put_presence(entry)
                    self._relay(channel, user, _view(others), _view([*others, entry]))

    async def _resync(self) -> None:
        """Shared store: the safety net for lost notices (the diffs of other nodes travel only
        in them; a pub/sub that reconnects, or retries without failing, drops some). Every
        ``node_poll_interval``, for each channel with subscribers on this node, the presence in
        the store is compared with what they were sent; if it differs, they get the full state
        again (a client applies it as the changes from what it has: nothing if the notices did
        arrive). At once when this node watches the notices again after a failure."""
        while True:
            with trio.move_on_after(self._config.node_poll_interval):
                await self._resync_now.wait()
            self._resync_now = trio.Event()
            for channel in list(self._synced):
                if not self._has_subscribers(channel):
                    del self._synced[channel]
                    continue
                try:
                    async with self._lock:
                        members = _members(await self._store.presence(channel))
                        if channel in self._synced and self._synced[channel] != members:
                            self._synced[channel] = members
                            state = PresenceState(channel, dict(members))
                            self._broadcast(channel, state, local=True)
                except Exception:
                    logger.exception("presence: reading the store for a re-sync failed")
                    break

    async def _departures(self) -> None:
        """Connections gone: their entries enter the grace period."""
        async for connection in self._gone:
            while True:
                try:
                    await self._depart(connection)
                    break
                except Exception:
                    # A store that failed must not end the server: try again in a second.
                    logger.exception("presence: a departure failed")
                    await trio.sleep(_RETRY)
            self._changed.set()

    async def _depart(self, connection: str) -> None:
        timeout = self._config.presence_timeout
        async with self._lock:
            for entry in await self._store.presence_of(connection):
                if entry.leave_at is not None:
                    continue  # already leaving (a retry)
                await self._store.put_presence(attrs.evolve(entry, leave_at=self._wall() + timeout))
                heapq.heappush(
                    self._leaving,
                    (trio.current_time() + timeout, entry.channel, entry.user, connection),
                )

    def _refusal(self, frame: PresenceUpdate) -> str | None:
        """Why an update is refused, or ``None``: metadata is bounded in depth and bytes (so
        that the presence state always encodes)."""
        config = self._config
        reason = check_payload(frame.metadata, max_depth=config.max_payload_depth)
        if reason is not None:
            return f"metadata: {reason}"
        if len(orjson.dumps(frame.metadata)) > config.max_presence_bytes:
            return f"metadata is over {config.max_presence_bytes} bytes"
        return None

    async def handle(self, context: MetaContext, frame: PresenceUpdate) -> None:
        reason = self._refusal(frame)
        if reason is not None:
            await trio.lowlevel.checkpoint()
            context.send(Error(ErrorCode.PRESENCE_LIMIT, reason))
            return
        user = context.identity.user
        connection = context.connection_id
        channel = frame.channel
        async with self._lock:
            if frame.status is PresenceStatus.OFFLINE:  # withdrawn at once, no grace period
                self._mine.get(connection, {}).pop((channel, user), None)
                await self._remove(channel, user, connection)
                return
            entries = await self._store.presence(channel, user)
            if not entries:
                limit = self._config.max_presence_entries
                if len(await self._store.presence_channels(user)) >= limit:
                    message = f"present in at most {limit} channels per user"
                    context.send(Error(ErrorCode.PRESENCE_LIMIT, message))
                    return
            before = _view(entries)
            self._last_update = max(self._wall(), self._last_update + 1e-6)
            entry = PresenceEntry(
                channel,
                user,
                connection,
                frame.status.value,
                dict(frame.metadata),
                before.since if before is not None else int(self._wall() * 1000),
                self._last_update,
                node=self._node,
            )
            await self._store.put_presence(entry)
            self._mine.setdefault(connection, {})[channel, user] = entry
            others = [e for e in entries if e.connection != connection]
            self._relay(channel, user, before, _view([*others, entry]))

    async def _remove(
        self, channel: str, user: str, connection: str, *, revivable: bool = False
    ) -> None:
        """Drop that entry (``revivable``: unless its node, taken for dead, revived it)."""
        entries = await self._store.presence(channel, user)
        mine = [e for e in entries if e.connection == connection]
        if not mine or (revivable and mine[0].leave_at is None):
            return
        if await self._store.drop_presence(channel, user, connection) is False:
            return  # another node dropped it meanwhile (and relayed the leave)
        rest = [e for e in entries if e.connection != connection]
        self._relay(channel, user, _view(entries), _view(rest))

    def _relay(
        self, channel: str, user: str, before: PresenceMember | None, after: PresenceMember | None
    ) -> None:
        synced = self._synced.get(channel)
        if synced is not None:  # this node's subscribers get the diff: they know it
            if after is None:
                synced.pop(user, None)
            else:
                synced[user] = after
        if after is None:
            if before is not None:
                self._broadcast(channel, PresenceDiff(channel, leaves={user: before}))
        elif before is None or (before.status, before.metadata) != (after.status, after.metadata):
            self._broadcast(channel, PresenceDiff(channel, joins={user: after}))

    async def attached(self, channel: str) -> object | None:
        # Under the lock: no update can land between this read and its diff's broadcast.
        async with self._lock:
            members = _members(await self._store.presence(channel))
            if self._shared is not None:
                self._synced[channel] = dict(members)
        return PresenceState(channel, members)

    def heard(self, channel: str, data: bytes) -> None:
        """Another node's presence diff reached this node's subscribers: they know it (so the
        next re-sync sends nothing for it)."""
        synced = self._synced.get(channel)
        if synced is None or b'"presence_diff"' not in data:
            return
        try:
            frames = decode_server_message(data)
        except ProtocolError:
            synced.clear()  # not understood: the next re-sync sends the full state
            return
        for frame in frames:
            if isinstance(frame, PresenceDiff):
                for user in frame.leaves:
                    synced.pop(user, None)
                synced.update(frame.joins)

    def missed(self) -> None:
        """This node may have missed other nodes' notices: re-sync now."""
        self._resync_now.set()

    def disconnected(self, context: MetaContext) -> None:
        self._mine.pop(context.connection_id, None)
        self._gone_send.send_nowait(context.connection_id)


def _members(entries: list[PresenceEntry]) -> dict[str, PresenceMember]:
    """What others see of a channel's present users, from its entries."""
    by_user: dict[str, list[PresenceEntry]] = {}
    for entry in entries:
        by_user.setdefault(entry.user, []).append(entry)
    members = {user: _view(entries) for user, entries in by_user.items()}
    return {user: member for user, member in members.items() if member is not None}


def _view(entries: list[PresenceEntry]) -> PresenceMember | None:
    """What others see of a user from their entries: the newest one's status and metadata, and
    since when the user is present (``None``: not present)."""
    if not entries:
        return None
    newest = max(entries, key=lambda e: e.updated)
    since = min(e.since for e in entries)
    return PresenceMember(PresenceStatus(newest.status), newest.metadata, since)


class TypingHandler(BaseHandler):
    """Typing indicators: relayed to the channel's other subscribers; ``typing: false`` for a
    typist whose connection went away; cleared when the typist publishes to the channel."""

    frames: ClassVar[tuple[type, ...]] = (Typing,)

    def __init__(self, server: ServerView) -> None:
        self.registry = TypingRegistry()
        self._broadcast = server.broadcast

    async def handle(self, context: MetaContext, frame: Typing) -> None:
        await trio.lowlevel.checkpoint()
        user = context.identity.user
        limit = context.config.max_subscriptions
        connection = context.connection_id
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
        for channel, user in self.registry.disconnected(context.connection_id):
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


def _receipts(server: ServerView) -> Handler:
    return ReceiptsHandler()


register_handler(PresenceHandler)
register_handler(TypingHandler)
register_handler(_receipts)
