"""Server storage: per-client ack watermarks and per-channel logs. An interface, an in-memory
implementation (tests, ephemeral servers) and SQLite (the default, in ``_sqlite.py``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import trio

__all__ = [
    "ChannelInfo",
    "ClientIdTaken",
    "MemoryStore",
    "NewEvent",
    "Store",
    "StoreBase",
    "StoredEvent",
    "new_epoch",
]


def new_epoch() -> str:
    return secrets.token_hex(6)


class ClientIdTaken(Exception):
    """A commit for a client_id bound to another user (two users resumed a client_id no one
    owned yet, and the other committed first): nothing of it is stored."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client_id {client_id[:40]!r} belongs to another user")
        self.client_id = client_id


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
class StoredEvent:
    channel: str
    offset: int
    epoch: str
    event: str
    payload: Any
    timestamp: int
    sender: str | None
    idempotency_key: str | None


@attrs.frozen
class ChannelInfo:
    epoch: str
    head: int
    """Offset of the newest event (0: none yet)."""
    first: int
    """Oldest offset still retained (head + 1 when the log is empty)."""


class Store(Protocol):
    """What the server needs from storage. Every method is atomic."""

    async def open(self) -> None:
        """Make the store ready (create files, connect); the server calls it once, first."""

    async def bind_client(self, client_id: str, user: str) -> bool:
        """Whether ``user`` may resume ``client_id``: it is bound to no one yet, or to ``user``.
        A client_id is bound to the sender of its first stored events (by ``commit``), before
        which no one else can have seen it (it shows only inside default idempotency keys)."""

    async def client_ack(self, client_id: str) -> int:
        """The highest seq stored (or consumed) for ``client_id``; 0 for a new client."""

    async def commit(
        self, client_id: str, ack_seq: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent | None]:
        """In one transaction: append ``events`` to their channels and set the client's ack
        watermark to ``ack_seq``. An event whose seq is at or below the client's watermark, or
        whose caller-chosen idempotency key its sender (the user) already used within the dedup
        window, is not appended again (``None`` in the result). Keys of different users never
        collide."""

    async def commit_many(
        self, batch: Sequence[tuple[str, int, Sequence[NewEvent]]]
    ) -> list[list[StoredEvent | None]]:
        """:meth:`commit` for several ``(client_id, ack_seq, events)`` in one transaction."""

    async def channel(self, channel: str) -> ChannelInfo:
        """The channel's epoch and retained range. A channel that never held an event keeps no
        row: it reads as empty, under the store's own epoch (which its first event keeps)."""

    async def read(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        """Retained events with offset > ``after``, oldest first, at most ``limit``."""

    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        """Raise ``user``'s read watermark in ``channel`` to ``offset``; returns whether it moved
        (a watermark never moves backwards)."""

    async def receipts(self, channel: str) -> dict[str, int]:
        """Every reader's watermark in ``channel``."""

    async def aclose(self) -> None: ...


class StoreBase:
    """Shared parts of the stores: ``commit`` is ``commit_many`` of one request."""

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def commit_many(
        self, batch: Sequence[tuple[str, int, Sequence[NewEvent]]]
    ) -> list[list[StoredEvent | None]]:
        raise NotImplementedError

    async def commit(
        self, client_id: str, ack_seq: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent | None]:
        (stored,) = await self.commit_many([(client_id, ack_seq, events)])
        return stored


@attrs.define
class _Log:
    epoch: str
    events: list[StoredEvent] = attrs.Factory(list)
    stored_at: list[float] = attrs.Factory(list)
    head: int = 0


class MemoryStore(StoreBase):
    """A store in memory: lost when the process ends (its epochs say so to resuming clients)."""

    def __init__(
        self,
        *,
        retention_count: int = 10_000,
        retention_age: float = 7 * 24 * 3600,
        dedup_window: float = 24 * 3600,
    ) -> None:
        self.epoch = new_epoch()
        """Every channel's epoch: a new store (a restarted memory server) has another."""
        self._acks: dict[str, int] = {}
        self._owners: dict[str, str] = {}
        self._logs: dict[str, _Log] = {}
        self._keys: dict[tuple[str | None, str], float] = {}
        self._receipts: dict[str, dict[str, int]] = {}
        self.retention_count = retention_count
        self.retention_age = retention_age
        self.dedup_window = dedup_window

    def _log(self, channel: str) -> _Log:
        log = self._logs.get(channel)
        if log is None:
            log = self._logs[channel] = _Log(self.epoch)
        return log

    async def bind_client(self, client_id: str, user: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._owners.get(client_id, user) == user  # bound by its first commit

    async def client_ack(self, client_id: str) -> int:
        await trio.lowlevel.checkpoint()
        return self._acks.get(client_id, 0)

    async def commit_many(
        self, batch: Sequence[tuple[str, int, Sequence[NewEvent]]]
    ) -> list[list[StoredEvent | None]]:
        # All or nothing, as a transaction: the checks that can fail run before any change.
        owners: dict[str, str] = {}
        for client_id, _, events in batch:
            owner = next((new.sender for new in events if new.sender is not None), None)
            if owner is not None:
                bound = owners.setdefault(client_id, self._owners.get(client_id, owner))
                if bound != owner:
                    raise ClientIdTaken(client_id)
        results = [self._commit(*request) for request in batch]
        await trio.lowlevel.checkpoint()
        return results

    def _commit(
        self, client_id: str, ack_seq: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent | None]:
        now = time.time()
        stored: list[StoredEvent | None] = []
        watermark = self._acks.get(client_id, 0)
        owner = next((new.sender for new in events if new.sender is not None), None)
        if owner is not None:
            self._owners.setdefault(client_id, owner)  # checked by commit_many
        own_keys = f"{client_id}:"  # keys the client library made: its seqs dedup those
        for new in events:
            if new.seq is not None and new.seq <= watermark:
                stored.append(None)  # stored through another connection of this client
                continue
            key = new.idempotency_key
            if key is not None and not key.startswith(own_keys):
                scoped = (new.sender, key)  # keys are the user's own: never another's
                seen = self._keys.get(scoped)
                if seen is not None and now - seen < self.dedup_window:
                    stored.append(None)
                    continue
                self._keys[scoped] = now
            log = self._log(new.channel)
            log.head += 1
            event = StoredEvent(
                new.channel,
                log.head,
                log.epoch,
                new.event,
                new.payload,
                new.timestamp,
                new.sender,
                new.idempotency_key,
            )
            log.events.append(event)
            log.stored_at.append(now)
            excess = max(0, len(log.events) - self.retention_count)
            while excess < len(log.events) and log.stored_at[excess] < now - self.retention_age:
                excess += 1
            del log.events[:excess]
            del log.stored_at[:excess]
            stored.append(event)
        self._acks[client_id] = max(self._acks.get(client_id, 0), ack_seq)
        return stored

    async def channel(self, channel: str) -> ChannelInfo:
        await trio.lowlevel.checkpoint()
        log = self._logs.get(channel)
        if log is None:
            return ChannelInfo(self.epoch, 0, 1)
        first = log.events[0].offset if log.events else log.head + 1
        return ChannelInfo(log.epoch, log.head, first)

    async def read(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        await trio.lowlevel.checkpoint()
        log = self._logs.get(channel)
        if log is None:
            return []
        events = log.events
        # Offsets are contiguous within the retained list: index straight to the first wanted.
        start = 0 if not events else max(0, after + 1 - events[0].offset)
        return events[start : start + limit]

    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        await trio.lowlevel.checkpoint()
        if offset <= self._receipts.get(channel, {}).get(user, 0):
            return False
        self._receipts.setdefault(channel, {})[user] = offset
        return True

    async def receipts(self, channel: str) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return dict(self._receipts.get(channel, {}))

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
