"""The default server store: SQLite (stdlib) in WAL mode, run in a worker thread.

Every call runs in one worker thread at a time (a capacity limiter of 1), so the store has a single
writer; a ``write`` is one transaction, fsynced (``synchronous=FULL``) before it returns, which is
what lets the server acknowledge only what is durably stored.

A channel's log is kept in blocks: the events one transaction appends to a channel (consecutive
offsets) are one row, their fields a JSON array. A row per event cost SQLite about 10 us of work
per event on the machines we measured; a block costs about as much as one row for hundreds.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

import orjson
import trio

from .._protocol import Message
from ._store import (
    Append,
    ChannelInfo,
    ClientRow,
    PresenceEntry,
    Snapshot,
    StoreConflict,
    WriteBatch,
    new_epoch,
)

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, ack_seq INTEGER NOT NULL, user TEXT,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY, epoch TEXT NOT NULL, head INTEGER NOT NULL, first INTEGER NOT NULL
);
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
_Row = tuple[str, Any, int, "str | None", "str | None", "int | None"]

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


def _migrate_generation(db: sqlite3.Connection) -> None:
    """Earlier versions kept no fencing generation per client: every row starts at 0."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(clients)")}
    if "generation" not in columns:
        db.execute("ALTER TABLE clients ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")


#: The columns of a client row (``ClientRow``'s fields, the owner stored as ``user``).
_CLIENT_COLUMNS = "user, ack_seq, generation"


def _client_row(row: Any) -> ClientRow:
    return ClientRow(row[0], int(row[1]), int(row[2]))


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


def _channel_row(db: sqlite3.Connection, name: str) -> ChannelInfo | None:
    row = db.execute("SELECT epoch, head, first FROM channels WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    return ChannelInfo(str(row[0]), int(row[1]), int(row[2]))


def _check(db: sqlite3.Connection, batch: WriteBatch) -> None:
    """The batch's preconditions, inside its transaction."""
    for append in batch.appends:
        info = _channel_row(db, append.channel)
        if (info.head if info is not None else 0) != append.after:
            raise StoreConflict(f"channel {append.channel!r} moved")
    for update in batch.clients:
        row = db.execute(
            f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE client_id = ?", (update.client_id,)
        ).fetchone()
        if (_client_row(row) if row is not None else None) != update.before:
            raise StoreConflict(f"client {update.client_id!r} moved")


def _append(db: sqlite3.Connection, now: float, append: Append) -> None:
    """Store an append's events as blocks, then its retention."""
    name = append.channel
    events = append.events
    head = events[-1].offset if events else append.after
    rows = [
        (e.event, e.payload, e.timestamp, e.sender, e.idempotency_key, e.server_time)
        for e in events
    ]
    if rows:
        db.executemany(
            "INSERT INTO blocks VALUES (?, ?, ?, ?, ?)",
            (
                (name, first, last, now, data)
                for first, last, data in _split(rows, append.after + 1)
            ),
        )
    # Whole blocks below the count cut go; read() hides the rest of a block that straddles it
    # (the channel's ``first``). (first <= cut lets SQLite walk the (channel, first) index.)
    cut = append.keep_from - 1
    db.execute(
        "DELETE FROM blocks WHERE channel = ? AND first <= ? AND last <= ?", (name, cut, cut)
    )
    # A block's events share its stored_at, and offsets grow with it, so the expired blocks are
    # a prefix: delete up to the first young one.
    db.execute(
        "DELETE FROM blocks WHERE channel = ? AND first < coalesce(("
        "SELECT first FROM blocks WHERE channel = ? AND stored_at >= ? ORDER BY first LIMIT 1), ?)",
        (name, name, append.drop_before, head + 1),
    )
    oldest = db.execute("SELECT min(first) FROM blocks WHERE channel = ?", (name,)).fetchone()
    first = (
        head + 1 if oldest is None or oldest[0] is None else max(int(oldest[0]), append.keep_from)
    )
    db.execute(
        "INSERT INTO channels (name, epoch, head, first) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET head = excluded.head, first = excluded.first",
        (name, append.epoch, head, first),
    )


def _migrate_first(db: sqlite3.Connection) -> None:
    """Earlier versions kept no ``first`` per channel: each read worked it out from the blocks
    retained and the store's ``retention_count`` (100,000 by default), hiding the start of a
    block that straddled the cut. Take it from both, in one transaction (a crash between adding
    the column and filling it would leave every channel claiming history it lost)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(channels)")}
        if "first" not in columns:
            db.execute("ALTER TABLE channels ADD COLUMN first INTEGER NOT NULL DEFAULT 1")
            db.execute(
                "UPDATE channels SET first = max(head - ? + 1, coalesce("
                "(SELECT min(first) FROM blocks WHERE blocks.channel = channels.name), head + 1))",
                (_OLD_RETENTION_COUNT,),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


#: What earlier versions kept per channel by default (their reads hid anything older).
_OLD_RETENTION_COUNT = 100_000


class SqliteStore:
    """Client rows, channel logs, caller keys and receipts in one SQLite file (the store
    contract of ``_store.py``; the server applies the rules)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._limiter = trio.CapacityLimiter(1)
        self._db: sqlite3.Connection | None = None
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
            db.execute("PRAGMA temp_store=MEMORY")
            db.executescript(_SCHEMA)
            _migrate(db)
            _migrate_identity(db)
            _migrate_first(db)
            _migrate_generation(db)
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS presence (channel TEXT NOT NULL, user TEXT NOT "
                "NULL, connection TEXT NOT NULL, status TEXT NOT NULL, metadata BLOB NOT NULL, "
                "since INTEGER NOT NULL, updated REAL NOT NULL, leave_at REAL, node TEXT NOT NULL, "
                "PRIMARY KEY (channel, user, connection))"
            )
            db.execute("CREATE INDEX IF NOT EXISTS temp.presence_user ON presence (user)")
            db.execute(
                "CREATE INDEX IF NOT EXISTS temp.presence_connection ON presence (connection)"
            )
            self._epoch = _store_epoch(db)
            self._db = db
        return self._db

    async def open(self) -> None:
        await self._run(self._connect)

    # Presence lives as long as the process: a TEMP table (in memory, this connection's only).

    async def presence(self, channel: str, user: str | None = None) -> list[PresenceEntry]:
        if user is None:
            return await self._presence_query("channel = ?", channel)
        return await self._presence_query("channel = ? AND user = ?", channel, user)

    async def presence_of(self, connection: str) -> list[PresenceEntry]:
        return await self._presence_query("connection = ?", connection)

    async def _presence_query(self, where: str, *args: str) -> list[PresenceEntry]:
        def query() -> list[PresenceEntry]:
            rows = self._connect().execute(
                "SELECT channel, user, connection, status, metadata, since, updated, leave_at, "
                f"node FROM presence WHERE {where}",
                args,
            )
            return [
                PresenceEntry(
                    ch, user, conn, status, orjson.loads(meta), since, updated, leave, node
                )
                for ch, user, conn, status, meta, since, updated, leave, node in rows
            ]

        return await self._run(query)

    async def presence_channels(self, user: str) -> set[str]:
        def query() -> set[str]:
            rows = self._connect().execute(
                "SELECT DISTINCT channel FROM presence WHERE user = ?", (user,)
            )
            return {str(channel) for (channel,) in rows}

        return await self._run(query)

    async def put_presence(self, entry: PresenceEntry) -> None:
        def put() -> None:
            self._connect().execute(
                "INSERT OR REPLACE INTO presence VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.channel,
                    entry.user,
                    entry.connection,
                    entry.status,
                    orjson.dumps(entry.metadata),
                    entry.since,
                    entry.updated,
                    entry.leave_at,
                    entry.node,
                ),
            )

        await self._run(put)

    async def drop_presence(self, channel: str, user: str, connection: str) -> bool:
        def drop() -> bool:
            cursor = self._connect().execute(
                "DELETE FROM presence WHERE channel = ? AND user = ? AND connection = ?",
                (channel, user, connection),
            )
            return cursor.rowcount > 0

        return await self._run(drop)

    async def load(
        self,
        *,
        clients: Collection[str] = (),
        channels: Collection[str] = (),
        keys: Collection[tuple[str, str]] = (),
    ) -> Snapshot:
        def query() -> Snapshot:
            db = self._connect()
            found = Snapshot(self._epoch)
            db.execute("BEGIN")  # one consistent read, whoever else writes the file
            try:
                self._load_rows(db, found, clients, channels, keys)
            finally:
                db.execute("COMMIT")
            return found

        return await self._run(query)

    @staticmethod
    def _load_rows(
        db: sqlite3.Connection,
        found: Snapshot,
        clients: Collection[str],
        channels: Collection[str],
        keys: Collection[tuple[str, str]],
    ) -> None:
        for client_id in clients:
            row = db.execute(
                f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE client_id = ?", (client_id,)
            ).fetchone()
            if row is not None:
                found.clients[client_id] = _client_row(row)
        for name in channels:
            info = _channel_row(db, name)
            if info is not None:
                found.channels[name] = info
        for user, key in keys:
            row = db.execute(
                "SELECT at FROM user_keys WHERE user = ? AND key = ?", (user, key)
            ).fetchone()
            if row is not None:
                found.keys[user, key] = float(row[0])

    async def write(self, batch: WriteBatch) -> None:
        def transaction() -> None:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                _check(db, batch)
                for append in batch.appends:
                    _append(db, batch.time, append)
                for update in batch.clients:
                    after = update.after
                    db.execute(
                        f"INSERT OR REPLACE INTO clients (client_id, {_CLIENT_COLUMNS}) "
                        "VALUES (?, ?, ?, ?)",
                        (update.client_id, after.owner, after.ack_seq, after.generation),
                    )
                db.executemany(
                    "INSERT OR REPLACE INTO user_keys (user, key, at) VALUES (?, ?, ?)",
                    ((user, key, batch.time) for user, key in batch.keys),
                )
                if batch.forget_keys_before is not None:
                    db.execute("DELETE FROM user_keys WHERE at < ?", (batch.forget_keys_before,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(transaction)

    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        def query() -> list[Message]:
            db = self._connect()
            info = _channel_row(db, channel)
            if info is None:
                return []
            after_ = max(after, info.first - 1)
            cursor = db.execute(
                "SELECT first, events, stored_at FROM blocks WHERE channel = ?1 AND first >= coalesce(("
                "SELECT max(first) FROM blocks WHERE channel = ?1 AND first <= ?2), 0) "
                "ORDER BY first",
                (channel, after_ + 1),
            )
            found: list[Message] = []
            try:
                for first, data, stored_at in cursor:
                    for offset, row in enumerate(orjson.loads(data), first):
                        event, payload, timestamp, sender, key = row[:5]
                        # Rows written before server_time existed: their block's time.
                        server_time = row[5] if len(row) > 5 else int(stored_at * 1000)
                        if offset > after_:
                            found.append(
                                Message(
                                    channel,
                                    offset,
                                    info.epoch,
                                    event,
                                    payload,
                                    timestamp,
                                    sender,
                                    key,
                                    server_time,
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
