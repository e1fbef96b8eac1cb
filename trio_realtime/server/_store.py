"""Server storage: the store contract (rows and one atomic write), the optional capability of a
store several server nodes share (:class:`SharedStore`), and a store in memory (tests, ephemeral
servers; shareable by several servers in one process). SQLite, the default, is in ``_sqlite.py``;
the rules are in ``_rules.py``."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs
import orjson
import trio

from .._errors import StoreConflict
from .._protocol import Message

__all__ = [
    "Append",
    "ChannelInfo",
    "ClientRow",
    "ClientUpdate",
    "MemoryStore",
    "NewEvent",
    "Notice",
    "PresenceEntry",
    "SharedStore",
    "Snapshot",
    "Store",
    "StoreConflict",
    "WriteBatch",
    "decode_notice",
    "encode_notice",
    "from_fields",
    "new_epoch",
    "shared_store",
    "to_fields",
]


def new_epoch() -> str:
    return secrets.token_hex(6)


@attrs.frozen
class NewEvent:
    """An upstream event accepted for publication."""

    channel: str
    event: str
    payload: Any
    timestamp: int
    sender: str | None
    idempotency_key: str | None
    seq: int | None = None
    """The client's upstream seq: at or below the client's stored watermark, it was stored
    already (by an earlier, overlapping connection of the same client) and is not stored again."""


@attrs.frozen
class ChannelInfo:
    """A channel's row: its epoch and the offsets it holds."""

    epoch: str
    head: int
    """Offset of the newest event (0: none yet)."""
    first: int
    """Oldest offset still retained (head + 1 when the log is empty)."""


@attrs.frozen
class ClientRow:
    """A client_id's row: the user it is bound to (``None``: nobody yet), its watermark (the
    highest seq stored, or consumed, for it) and its fencing generation.

    A store keeps every field and compares whole rows in :class:`ClientUpdate` preconditions;
    :func:`to_fields` / :func:`from_fields` serialize a row generically (a field added later
    reads back as its default from rows stored before it existed)."""

    owner: str | None
    ack_seq: int
    generation: int = 0
    """Raised by each resume of the client through a shared store (:class:`SharedStore`): a
    commit made by a connection that resumed under an older generation is refused, so that the
    watermark a resume answers with is final across server nodes. 0: never fenced (one node)."""


_Row = TypeVar("_Row", "ClientRow", "PresenceEntry")
_T = TypeVar("_T")


def to_fields(row: ClientRow | PresenceEntry) -> dict[str, Any]:
    """A row (:class:`ClientRow`, :class:`PresenceEntry`) as a dict of its fields, JSON-able:
    for stores that keep rows as documents or hashes."""
    return attrs.asdict(row)


def from_fields(kind: type[_Row], fields: dict[str, Any]) -> _Row:
    """The row of class ``kind`` that :func:`to_fields` made: fields it lacks take their
    defaults (a row stored before a field existed), unknown ones are ignored."""
    return _known(kind, fields)


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _known(kind: type[_T], fields: dict[str, Any]) -> _T:
    """An attrs ``kind`` from ``fields``, ignoring those it does not have."""
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = frozenset(f.name for f in attrs.fields(kind))  # type: ignore[arg-type]
    return kind(**{name: value for name, value in fields.items() if name in names})


@attrs.frozen
class Snapshot:
    """The rows :meth:`Store.load` found. Rows that do not exist are absent."""

    epoch: str
    """The store's epoch: a channel's first event starts its log under it."""
    clients: dict[str, ClientRow] = attrs.Factory(dict)
    channels: dict[str, ChannelInfo] = attrs.Factory(dict)
    """Channels that hold (or held) events; a channel never written to has no row."""
    keys: dict[tuple[str, str], float] = attrs.Factory(dict)
    """``(user, caller key)`` -> when it was stored (unix seconds)."""

    def channel(self, name: str) -> ChannelInfo:
        """The channel's row, or what a channel with none reads as (empty, the store's epoch)."""
        return self.channels.get(name) or ChannelInfo(self.epoch, 0, 1)


@attrs.frozen
class Append:
    """Events appended to one channel, with the retention that goes with them."""

    channel: str
    epoch: str
    after: int
    """The channel's head before this append: the store refuses the whole write
    (:class:`StoreConflict`) if it is another (someone else appended meanwhile)."""
    events: tuple[Message, ...]
    """Offsets ``after + 1`` onwards, contiguous."""
    keep_from: int
    """Retention by count: events with lower offsets are dropped."""
    drop_before: float
    """Retention by age: events stored before this time (unix seconds) are dropped."""


@attrs.frozen
class ClientUpdate:
    """A client row to write, if it still is ``before`` (else :class:`StoreConflict`)."""

    client_id: str
    before: ClientRow | None
    after: ClientRow


@attrs.frozen
class WriteBatch:
    """Everything one commit writes: applied all together or not at all."""

    time: float
    """When it is stored (unix seconds): the stored time of its events and keys."""
    appends: tuple[Append, ...] = ()
    clients: tuple[ClientUpdate, ...] = ()
    keys: tuple[tuple[str, str], ...] = ()
    """``(user, caller key)`` rows to store at ``time`` (replacing an older row of the pair)."""
    forget_keys_before: float | None = None
    """If set, key rows stored before this time are dropped (the dedup window passed)."""


@attrs.frozen
class PresenceEntry:
    """One connection's presence in a channel (PROTOCOL.md section 5): what the user of
    ``connection`` said there, when, and (once the connection went away) until when it stays."""

    channel: str
    user: str
    connection: str
    """The connection's id: unique across server nodes."""
    status: str
    metadata: dict[str, Any]
    since: int
    """When the user joined the channel (ms since the epoch)."""
    updated: float
    """When this entry was set (unix seconds): the newest of a user's entries is what others see."""
    leave_at: float | None = None
    """Set when the connection went away: the end of its grace period (unix seconds)."""
    node: str = ""
    """The server node that holds the connection (``RealtimeServer.node``): when that node's
    lease (:meth:`SharedStore.renew_lease`) runs out, the others treat the entry as left at the
    lease's end plus the grace period."""


class Store(Protocol):
    """Where the server keeps its rows: channel logs, client watermarks, caller keys, read
    receipts. A store keeps rows and applies a batch of writes atomically; the *rules* (dedup by
    seq and by key, the dedup window, offsets, epochs, retention) are the server's, applied once
    for every store (``_rules.py``). ``trio_realtime.testing.check_store`` checks the contract.

    Atomicity: :meth:`write` applies a whole :class:`WriteBatch` or nothing, and checks its
    preconditions (each append's ``after`` is the channel's head, each client row is its
    ``before``) in the same atomic step, raising :class:`StoreConflict` if one fails. Everything
    a write stored is durable when it returns (the server acknowledges it next).
    """

    async def open(self) -> None:
        """Make the store ready (create files, connect); the server calls it once, first."""

    async def aclose(self) -> None: ...

    async def load(
        self,
        *,
        clients: Collection[str] = (),
        channels: Collection[str] = (),
        keys: Collection[tuple[str, str]] = (),
    ) -> Snapshot:
        """The rows asked for that exist (one consistent read)."""

    async def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically and durably (see the class docstring)."""

    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        """Retained events with offset > ``after``, oldest first: ``limit`` of them, or all
        there are if fewer (a short page means the end of the log)."""

    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        """Raise ``user``'s read watermark in ``channel`` to ``offset`` if it is higher; returns
        whether it moved (a watermark never moves backwards)."""

    async def receipts(self, channel: str) -> dict[str, int]:
        """Every reader's watermark in ``channel``."""

    async def presence(self, channel: str, user: str | None = None) -> list[PresenceEntry]:
        """The presence entries of ``channel`` (of ``user`` only, if given)."""

    async def presence_channels(self, user: str) -> set[str]:
        """The channels in which ``user`` has presence entries."""

    async def presence_of(self, connection: str) -> list[PresenceEntry]:
        """The presence entries of one connection."""

    async def put_presence(self, entry: PresenceEntry) -> None:
        """Store ``entry``, replacing the one of the same channel, user and connection. (Presence
        need not outlive the server's process: a store may keep it in memory.)"""

    async def drop_presence(self, channel: str, user: str, connection: str) -> bool:
        """Remove that entry, if there is one; returns whether there was (and this call removed
        it, in one atomic step: of two nodes dropping the same entry at once, one gets ``True``,
        and only that one relays the leave)."""


@attrs.frozen
class Notice:
    """What one server node tells the others through a shared store about ``channel``."""

    node: str
    """The node that published it (a node ignores its own)."""
    channel: str
    head: int = 0
    """The channel's head after a write of ``node`` (0: no write; a meta notice)."""
    meta: bytes | None = None
    """An encoded frame (presence diff, typing, receipt) for the channel's subscribers."""
    skip_user: str | None = None
    """``meta`` is not for this user's connections (typing: not echoed to the typist)."""


def encode_notice(notice: Notice) -> bytes:
    """A notice as bytes (one JSON object), for a store that passes notices between processes."""
    fields = attrs.asdict(notice)
    if notice.meta is not None:
        fields["meta"] = notice.meta.decode("utf-8")
    return orjson.dumps(fields)


def decode_notice(data: bytes | str) -> Notice:
    """The notice :func:`encode_notice` made (unknown fields are ignored)."""
    fields = orjson.loads(data)
    meta = fields.get("meta")
    fields["meta"] = meta.encode("utf-8") if isinstance(meta, str) else None
    return _known(Notice, fields)


@runtime_checkable
class SharedStore(Store, Protocol):
    """The optional capability of a store that several server nodes (processes, machines) share.

    With it, each node also fans out what the others store (it follows :meth:`watch` and reads the
    store), fences resumes (:attr:`ClientRow.generation`) and keeps a lease for its presence
    entries. A store without it (or whose :attr:`shared` is false) is one node's alone: the server
    runs exactly as it did before the capability existed.

    Notices are hints, not data: they may be lost, repeated or reordered (the server polls the
    store as a safety net every ``ServerConfig.node_poll_interval``), so pub/sub that drops
    messages while a node reconnects (Redis PUBLISH/SUBSCRIBE), or a blocking XREAD on a stream,
    both do.
    """

    shared: bool
    """Whether other nodes may use this store: the server runs the multi-node path only if so."""

    async def publish(self, notices: Sequence[Notice]) -> None:
        """Tell every node that watches (this one may be told too, and ignores its own) about
        ``notices``, in order. May drop them (see the class docstring), must not block long."""

    def watch(self) -> AbstractAsyncContextManager[AsyncIterator[Notice]]:
        """For the block: the notices published (by any node) from when it was entered. The
        iterator may end or fail (a lost connection): the server enters it again."""

    async def renew_lease(self, node: str, until: float) -> dict[str, float]:
        """Set ``node``'s lease to end at ``until`` (unix seconds), and return every node's lease
        end, expired ones included (until :meth:`drop_lease` drops them)."""

    async def drop_lease(self, node: str) -> None:
        """Forget ``node``'s lease (its presence entries are gone)."""

    async def presence_of_node(self, node: str) -> list[PresenceEntry]:
        """The presence entries of connections held by ``node``."""


def shared_store(store: Store) -> SharedStore | None:
    """``store`` if it has the :class:`SharedStore` capability and is shared, else ``None``."""
    if isinstance(store, SharedStore) and store.shared:
        return store
    return None


#: Notices a node's watcher may hold unread in a shared MemoryStore before later ones are dropped.
_NOTICE_BUFFER = 10_000


@attrs.define
class _Log:
    epoch: str
    head: int
    events: list[Message] = attrs.Factory(list)
    stored_at: list[float] = attrs.Factory(list)


class MemoryStore:
    """A store in memory: lost when the process ends (its epochs say so to resuming clients).

    ``shared=True``: several servers in one process (one trio run) may use it at once, as nodes
    of one service (:class:`SharedStore`, notices passed in memory)."""

    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self.epoch = new_epoch()
        """The epoch of this store's channels: a new store (a restarted memory server) has
        another."""
        self._clients: dict[str, ClientRow] = {}
        self._logs: dict[str, _Log] = {}
        self._keys: dict[tuple[str, str], float] = {}
        self._receipts: dict[str, dict[str, int]] = {}
        self._presence: dict[tuple[str, str, str], PresenceEntry] = {}
        self._leases: dict[str, float] = {}
        self._watchers: set[trio.MemorySendChannel[Notice]] = set()

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def load(
        self,
        *,
        clients: Collection[str] = (),
        channels: Collection[str] = (),
        keys: Collection[tuple[str, str]] = (),
    ) -> Snapshot:
        await trio.lowlevel.checkpoint()
        found = Snapshot(self.epoch)
        for client_id in clients:
            row = self._clients.get(client_id)
            if row is not None:
                found.clients[client_id] = row
        for name in channels:
            log = self._logs.get(name)
            if log is not None:
                first = log.events[0].offset if log.events else log.head + 1
                found.channels[name] = ChannelInfo(log.epoch, log.head, first)
        for key in keys:
            at = self._keys.get(key)
            if at is not None:
                found.keys[key] = at
        return found

    async def write(self, batch: WriteBatch) -> None:
        # Check every precondition, then apply: all or nothing, as one transaction.
        for append in batch.appends:
            log = self._logs.get(append.channel)
            if (log.head if log is not None else 0) != append.after:
                raise StoreConflict(f"channel {append.channel!r} moved")
        for update in batch.clients:
            if self._clients.get(update.client_id) != update.before:
                raise StoreConflict(f"client {update.client_id!r} moved")
        for append in batch.appends:
            log = self._logs.get(append.channel)
            if log is None:
                log = self._logs[append.channel] = _Log(append.epoch, 0)
            log.events.extend(append.events)
            log.stored_at.extend([batch.time] * len(append.events))
            if append.events:
                log.head = append.events[-1].offset
            drop = 0
            while drop < len(log.events) and (
                log.events[drop].offset < append.keep_from
                or log.stored_at[drop] < append.drop_before
            ):
                drop += 1
            del log.events[:drop]
            del log.stored_at[:drop]
        for update in batch.clients:
            self._clients[update.client_id] = update.after
        for key in batch.keys:
            self._keys[key] = batch.time
        if batch.forget_keys_before is not None:
            cutoff = batch.forget_keys_before
            self._keys = {key: at for key, at in self._keys.items() if at >= cutoff}
        await trio.lowlevel.checkpoint()

    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        await trio.lowlevel.checkpoint()
        log = self._logs.get(channel)
        if log is None or not log.events:
            return []
        # Offsets are contiguous within the retained list: index straight to the first wanted.
        start = max(0, after + 1 - log.events[0].offset)
        return log.events[start : start + limit]

    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        await trio.lowlevel.checkpoint()
        if offset <= self._receipts.get(channel, {}).get(user, 0):
            return False
        self._receipts.setdefault(channel, {})[user] = offset
        return True

    async def receipts(self, channel: str) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return dict(self._receipts.get(channel, {}))

    async def presence(self, channel: str, user: str | None = None) -> list[PresenceEntry]:
        await trio.lowlevel.checkpoint()
        return [
            entry
            for (name, who, _), entry in self._presence.items()
            if name == channel and user in (None, who)
        ]

    async def presence_channels(self, user: str) -> set[str]:
        await trio.lowlevel.checkpoint()
        return {name for name, who, _ in self._presence if who == user}

    async def presence_of(self, connection: str) -> list[PresenceEntry]:
        await trio.lowlevel.checkpoint()
        return [entry for key, entry in self._presence.items() if key[2] == connection]

    async def put_presence(self, entry: PresenceEntry) -> None:
        await trio.lowlevel.checkpoint()
        self._presence[entry.channel, entry.user, entry.connection] = entry

    async def drop_presence(self, channel: str, user: str, connection: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._presence.pop((channel, user, connection), None) is not None

    async def publish(self, notices: Sequence[Notice]) -> None:
        await trio.lowlevel.checkpoint()
        for watcher in list(self._watchers):
            for notice in notices:
                try:
                    watcher.send_nowait(notice)
                except trio.WouldBlock:
                    break  # a watcher that does not keep up loses notices (it polls)
                except trio.BrokenResourceError:
                    self._watchers.discard(watcher)
                    break

    def watch(self) -> AbstractAsyncContextManager[AsyncIterator[Notice]]:
        return self._watch()

    @asynccontextmanager
    async def _watch(self) -> AsyncIterator[AsyncIterator[Notice]]:
        send, receive = trio.open_memory_channel[Notice](_NOTICE_BUFFER)
        self._watchers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._watchers.discard(send)
            send.close()

    async def renew_lease(self, node: str, until: float) -> dict[str, float]:
        await trio.lowlevel.checkpoint()
        self._leases[node] = until
        return dict(self._leases)

    async def drop_lease(self, node: str) -> None:
        await trio.lowlevel.checkpoint()
        self._leases.pop(node, None)

    async def presence_of_node(self, node: str) -> list[PresenceEntry]:
        await trio.lowlevel.checkpoint()
        return [entry for entry in self._presence.values() if entry.node == node]
