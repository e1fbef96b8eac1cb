"""The default server store: SQLite (stdlib) in WAL mode, run in a worker thread.

Every call runs in one worker thread at a time (a capacity limiter of 1), so the store has a single
writer; a ``commit`` is one transaction, fsynced (``synchronous=FULL``) before it returns, which is
what lets the server acknowledge only what is durably stored.

A channel's log is kept in blocks: the events one transaction appends to a channel (consecutive
offsets) are one row, their fields a JSON array. A row per event cost SQLite about 10 us of work
per event on the machines we measured; a block costs about as much as one row for hundreds.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import trio

from ._store import ChannelInfo, ClientIdTaken, NewEvent, StoreBase, StoredEvent, new_epoch

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, ack_seq INTEGER NOT NULL, user TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, head INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    channel TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, stored_at REAL NOT NULL,
    events BLOB NOT NULL, PRIMARY KEY (channel, first)
);
CREATE TABLE IF NOT EXISTS user_keys (
    user TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (user, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    channel TEXT NOT NULL, user TEXT NOT NULL, offset INTEGER NOT NULL, PRIMARY KEY (channel, user)
) WITHOUT ROWID;
"""

# A block's events: [event, payload, timestamp, sender, idempotency_key] each, offsets first..last.
_Row = tuple[str, Any, int, "str | None", "str | None"]

#: A block holds at most this many bytes of events (or one event, if larger): a read decodes the
#: blocks it touches whole, so what one transaction wrote (tens of MB under load, with large
#: events) must not be one block.
BLOCK_BYTES = 256 * 1024


def _split(rows: list[_Row], first: int) -> Iterator[tuple[int, int, bytes]]:
    """``rows`` (offsets from ``first``) as blocks ``(first, last, encoded)`` of at most
    :data:`BLOCK_BYTES` each, but for a lone larger event (each row encoded once)."""
    parts: list[bytes] = []
    size = 0
    start = first
    dumps = orjson.dumps
    for offset, row in enumerate(rows, first):
        data = dumps(row)
        if parts and size + len(data) > BLOCK_BYTES:
            yield start, offset - 1, b"[" + b",".join(parts) + b"]"
            parts, size, start = [], 0, offset
        parts.append(data)
        size += len(data) + 1
    yield start, first + len(rows) - 1, b"[" + b",".join(parts) + b"]"


#: The owner of a client_id that an upgraded database cannot attribute to one user.
CONTESTED = "\x00contested"


def _migrate_identity(db: sqlite3.Connection) -> None:
    """Earlier versions kept caller keys for all users in one table (``ikeys``), client_ids bound
    to no user, and a ``channels`` row for every name ever subscribed to. Caller keys are now
    scoped per user: the old ones, of unknown users, are dropped (an event sent again under such
    a key within the old dedup window is stored again). Each client_id is bound to the sender of
    the retained events published under its default keys (``{client_id}:{seq}``), or to no one if
    they have several senders (:data:`CONTESTED`); one with none retained is bound by its next
    commit. Channels that never held an event are forgotten."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(clients)")}
    if "user" not in columns:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE clients ADD COLUMN user TEXT")
            owners: dict[str, str] = {}
            for (data,) in db.execute("SELECT events FROM blocks ORDER BY channel, first"):
                for _, _, _, sender, key in orjson.loads(data):
                    # Caller keys were free-form then: someone may have published under
                    # another's default key. A client_id with events of several senders is
                    # bound to no one who can resume it (refused with 4003, never taken).
                    client_id, _, seq = (key or "").rpartition(":")
                    if (
                        client_id
                        and sender
                        and seq.isdigit()
                        and owners.setdefault(client_id, sender) != sender
                    ):
                        owners[client_id] = CONTESTED
            db.executemany(
                "UPDATE clients SET user = ? WHERE client_id = ? AND user IS NULL",
                ((user, client_id) for client_id, user in owners.items()),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    db.execute("DROP TABLE IF EXISTS ikeys")
    db.execute("DELETE FROM channels WHERE head = 0")


def _store_epoch(db: sqlite3.Connection) -> str:
    """The store's epoch: the epoch of channels created from now on (made once per database)."""
    row = db.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()
    if row is not None:
        return str(row[0])
    epoch = new_epoch()
    db.execute("INSERT INTO meta (name, value) VALUES ('epoch', ?)", (epoch,))
    return epoch


def _migrate(db: sqlite3.Connection) -> None:
    """Move the one-row-per-event log of earlier versions into blocks (one per event)."""
    old = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'")
    if old.fetchone() is None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            "SELECT channel, offset, event, payload, timestamp, sender, ikey, stored_at FROM events"
        )
        db.executemany(
            "INSERT OR IGNORE INTO blocks VALUES (?, ?, ?, ?, ?)",
            (
                (ch, off, off, at, orjson.dumps([[ev, orjson.loads(pl), ts, snd, key]]))
                for ch, off, ev, pl, ts, snd, key, at in rows
            ),
        )
        db.execute("DROP TABLE events")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class SqliteStore(StoreBase):
    """Client watermarks and channel logs in one SQLite file.

    Retention: each channel keeps its newest ``retention_count`` events, none older than
    ``retention_age`` seconds (by the server's clock when stored). Idempotency keys chosen by
    callers are remembered for ``dedup_window`` seconds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention_count: int = 100_000,
        retention_age: float = 7 * 24 * 3600,
        dedup_window: float = 24 * 3600,
    ) -> None:
        self.path = os.fspath(path)
        self.retention_count = retention_count
        self.retention_age = retention_age
        self.dedup_window = dedup_window
        self._limiter = trio.CapacityLimiter(1)
        self._db: sqlite3.Connection | None = None
        self._next_ikey_purge = 0.0
        self._epoch = ""

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            _migrate(db)
            _migrate_identity(db)
            self._epoch = _store_epoch(db)
            self._db = db
        return self._db

    async def open(self) -> None:
        await self._run(self._connect)

    async def bind_client(self, client_id: str, user: str) -> bool:
        def bind() -> bool:
            # Read only: the binding is written by the client's first commit, so that a resume
            # that stores nothing leaves no row (a client_id is secret until its first event).
            row = (
                self._connect()
                .execute("SELECT user FROM clients WHERE client_id = ?", (client_id,))
                .fetchone()
            )
            return row is None or row[0] is None or row[0] == user

        return await self._run(bind)

    async def client_ack(self, client_id: str) -> int:
        def query() -> int:
            row = (
                self._connect()
                .execute("SELECT ack_seq FROM clients WHERE client_id = ?", (client_id,))
                .fetchone()
            )
            return int(row[0]) if row else 0

        return await self._run(query)

    def _channel(
        self, db: sqlite3.Connection, name: str, *, create: bool = False
    ) -> tuple[str, int]:
        """The channel's epoch and head; a channel without a row reads as empty, under the
        store's epoch, and gets its row (``create``) only when its first event is stored."""
        row = db.execute("SELECT epoch, head FROM channels WHERE name = ?", (name,)).fetchone()
        if row is None:
            if create:
                db.execute(
                    "INSERT INTO channels (name, epoch, head) VALUES (?, ?, 0)", (name, self._epoch)
                )
            return self._epoch, 0
        return str(row[0]), int(row[1])

    async def commit_many(
        self, batch: Sequence[tuple[str, int, Sequence[NewEvent]]]
    ) -> list[list[StoredEvent | None]]:
        def transaction() -> list[list[StoredEvent | None]]:
            db = self._connect()
            now = time.time()
            heads: dict[str, tuple[str, int]] = {}
            blocks: dict[str, list[_Row]] = {}
            results: list[list[StoredEvent | None]] = []
            db.execute("BEGIN IMMEDIATE")
            try:
                for client_id, ack_seq, events in batch:
                    results.append(self._append(db, now, heads, blocks, client_id, ack_seq, events))
                for name, (_, head) in heads.items():
                    db.execute("UPDATE channels SET head = ? WHERE name = ?", (head, name))
                    rows = blocks[name]
                    db.executemany(
                        "INSERT INTO blocks VALUES (?, ?, ?, ?, ?)",
                        (
                            (name, first, last, now, data)
                            for first, last, data in _split(rows, head - len(rows) + 1)
                        ),
                    )
                    # Whole blocks past the count limit go; read() and channel() hide the rest
                    # of a block that straddles it. (first <= cut adds nothing but lets SQLite
                    # walk the (channel, first) index instead of all the channel's blocks.)
                    cut = head - self.retention_count
                    db.execute(
                        "DELETE FROM blocks WHERE channel = ? AND first <= ? AND last <= ?",
                        (name, cut, cut),
                    )
                    # A block's events share its stored_at, and offsets grow with it, so the
                    # expired blocks are a prefix: walk from the oldest to the first young one.
                    db.execute(
                        "DELETE FROM blocks WHERE channel = ? AND first < coalesce(("
                        "SELECT first FROM blocks WHERE channel = ? AND stored_at >= ? "
                        "ORDER BY first LIMIT 1), ?)",
                        (name, name, now - self.retention_age, head + 1),
                    )
                if now >= self._next_ikey_purge:  # a scan of the table: once a minute is enough
                    db.execute("DELETE FROM user_keys WHERE at < ?", (now - self.dedup_window,))
                    self._next_ikey_purge = now + 60
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return results

        return await self._run(transaction)

    def _append(
        self,
        db: sqlite3.Connection,
        now: float,
        heads: dict[str, tuple[str, int]],
        blocks: dict[str, list[_Row]],
        client_id: str,
        ack_seq: int,
        events: Sequence[NewEvent],
    ) -> list[StoredEvent | None]:
        stored: list[StoredEvent | None] = []
        row = db.execute(
            "SELECT ack_seq, user FROM clients WHERE client_id = ?", (client_id,)
        ).fetchone()
        watermark = int(row[0]) if row else 0
        owner = next((new.sender for new in events if new.sender is not None), None)
        if row is not None and row[1] is not None and owner not in (None, row[1]):
            raise ClientIdTaken(client_id)
        own_keys = f"{client_id}:"  # keys the client library made: its seqs dedup those
        for new in events:
            if new.seq is not None and new.seq <= watermark:
                stored.append(None)  # stored through another connection of this client
                continue
            key = new.idempotency_key
            if key is not None and not key.startswith(own_keys):
                user = new.sender or ""  # keys are the user's own: never another's
                row = db.execute(
                    "SELECT at FROM user_keys WHERE user = ? AND key = ?", (user, key)
                ).fetchone()
                if row is not None and now - row[0] < self.dedup_window:
                    stored.append(None)
                    continue
                db.execute(
                    "INSERT OR REPLACE INTO user_keys (user, key, at) VALUES (?, ?, ?)",
                    (user, key, now),
                )
            channel = new.channel
            epoch, head = heads.get(channel) or self._channel(db, channel, create=True)
            head += 1
            heads[channel] = (epoch, head)
            rows = blocks.get(channel)
            if rows is None:
                rows = blocks[channel] = []
            rows.append((new.event, new.payload, new.timestamp, new.sender, key))
            stored.append(
                StoredEvent(
                    channel, head, epoch, new.event, new.payload, new.timestamp, new.sender, key
                )
            )
        db.execute(
            "INSERT INTO clients (client_id, ack_seq, user) VALUES (?, ?, ?) "
            "ON CONFLICT(client_id) DO UPDATE SET ack_seq = max(ack_seq, excluded.ack_seq), "
            "user = coalesce(user, excluded.user)",
            (client_id, ack_seq, owner),
        )
        return stored

    def _retained_from(self, db: sqlite3.Connection, channel: str, head: int) -> int:
        """The oldest offset retained (``head + 1`` if none)."""
        row = db.execute("SELECT min(first) FROM blocks WHERE channel = ?", (channel,)).fetchone()
        if row is None or row[0] is None:
            return head + 1
        return max(int(row[0]), head - self.retention_count + 1)

    async def channel(self, channel: str) -> ChannelInfo:
        def query() -> ChannelInfo:
            db = self._connect()
            epoch, head = self._channel(db, channel)
            return ChannelInfo(epoch, head, self._retained_from(db, channel, head))

        return await self._run(query)

    async def read(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        def query() -> list[StoredEvent]:
            db = self._connect()
            epoch, head = self._channel(db, channel)
            after_ = max(after, self._retained_from(db, channel, head) - 1)
            cursor = db.execute(
                "SELECT first, events FROM blocks WHERE channel = ?1 AND first >= coalesce(("
                "SELECT max(first) FROM blocks WHERE channel = ?1 AND first <= ?2), 0) "
                "ORDER BY first",
                (channel, after_ + 1),
            )
            found: list[StoredEvent] = []
            try:
                for first, data in cursor:
                    for offset, (event, payload, timestamp, sender, key) in enumerate(
                        orjson.loads(data), first
                    ):
                        if offset > after_:
                            found.append(
                                StoredEvent(
                                    channel, offset, epoch, event, payload, timestamp, sender, key
                                )
                            )
                            if len(found) >= limit:
                                return found
            finally:
                cursor.close()
            return found

        return await self._run(query)

    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        def update() -> bool:
            cursor = self._connect().execute(
                "INSERT INTO receipts (channel, user, offset) VALUES (?, ?, ?) "
                "ON CONFLICT(channel, user) DO UPDATE SET offset = excluded.offset "
                "WHERE excluded.offset > receipts.offset",
                (channel, user, offset),
            )
            return cursor.rowcount > 0

        return await self._run(update)

    async def receipts(self, channel: str) -> dict[str, int]:
        def query() -> dict[str, int]:
            rows = (
                self._connect()
                .execute("SELECT user, offset FROM receipts WHERE channel = ?", (channel,))
                .fetchall()
            )
            return {str(user): int(offset) for user, offset in rows}

        return await self._run(query)

    async def aclose(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close)
