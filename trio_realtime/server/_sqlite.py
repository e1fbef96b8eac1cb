"""The default server store: SQLite (stdlib) in WAL mode, run in a worker thread.

Every call runs in one worker thread at a time (a capacity limiter of 1), so the store has a single
writer; a ``commit`` is one transaction, fsynced (``synchronous=FULL``) before it returns, which is
what lets the server acknowledge only what is durably stored.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
import trio

from ._store import ChannelInfo, NewEvent, StoreBase, StoredEvent, new_epoch

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, ack_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, head INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    channel TEXT NOT NULL, offset INTEGER NOT NULL, event TEXT NOT NULL, payload BLOB NOT NULL,
    timestamp INTEGER NOT NULL, sender TEXT, ikey TEXT, stored_at REAL NOT NULL,
    PRIMARY KEY (channel, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ikeys (key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    channel TEXT NOT NULL, user TEXT NOT NULL, offset INTEGER NOT NULL, PRIMARY KEY (channel, user)
) WITHOUT ROWID;
"""


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
            self._db = db
        return self._db

    async def open(self) -> None:
        await self._run(self._connect)

    async def client_ack(self, client_id: str) -> int:
        def query() -> int:
            row = (
                self._connect()
                .execute("SELECT ack_seq FROM clients WHERE client_id = ?", (client_id,))
                .fetchone()
            )
            return int(row[0]) if row else 0

        return await self._run(query)

    def _channel(self, db: sqlite3.Connection, name: str) -> tuple[str, int]:
        row = db.execute("SELECT epoch, head FROM channels WHERE name = ?", (name,)).fetchone()
        if row is None:
            epoch = new_epoch()
            db.execute("INSERT INTO channels (name, epoch, head) VALUES (?, ?, 0)", (name, epoch))
            return epoch, 0
        return str(row[0]), int(row[1])

    async def commit_many(
        self, batch: Sequence[tuple[str, int, Sequence[NewEvent]]]
    ) -> list[list[StoredEvent | None]]:
        def transaction() -> list[list[StoredEvent | None]]:
            db = self._connect()
            now = time.time()
            heads: dict[str, tuple[str, int]] = {}
            results: list[list[StoredEvent | None]] = []
            db.execute("BEGIN IMMEDIATE")
            try:
                for client_id, ack_seq, events in batch:
                    results.append(self._append(db, now, heads, client_id, ack_seq, events))
                for name, (_, head) in heads.items():
                    db.execute("UPDATE channels SET head = ? WHERE name = ?", (head, name))
                    db.execute(
                        "DELETE FROM events WHERE channel = ? AND offset <= ?",
                        (name, head - self.retention_count),
                    )
                    # Offsets grow with stored_at, so the expired events are a prefix: walk the
                    # channel from its oldest event to the first one still young (a scan of the
                    # whole channel per commit would make every commit slower as it grows).
                    db.execute(
                        "DELETE FROM events WHERE channel = ? AND offset < coalesce(("
                        "SELECT offset FROM events WHERE channel = ? AND stored_at >= ? "
                        "ORDER BY offset LIMIT 1), ?)",
                        (name, name, now - self.retention_age, head + 1),
                    )
                if now >= self._next_ikey_purge:  # a scan of the table: once a minute is enough
                    db.execute("DELETE FROM ikeys WHERE at < ?", (now - self.dedup_window,))
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
        client_id: str,
        ack_seq: int,
        events: Sequence[NewEvent],
    ) -> list[StoredEvent | None]:
        stored: list[StoredEvent | None] = []
        rows: list[tuple[object, ...]] = []
        row = db.execute("SELECT ack_seq FROM clients WHERE client_id = ?", (client_id,)).fetchone()
        watermark = int(row[0]) if row else 0
        own_keys = f"{client_id}:"  # keys the client library made: its seqs dedup those
        for new in events:
            if new.seq is not None and new.seq <= watermark:
                stored.append(None)  # stored through another connection of this client
                continue
            key = new.idempotency_key
            if key is not None and not key.startswith(own_keys):
                row = db.execute("SELECT at FROM ikeys WHERE key = ?", (key,)).fetchone()
                if row is not None and now - row[0] < self.dedup_window:
                    stored.append(None)
                    continue
                db.execute("INSERT OR REPLACE INTO ikeys (key, at) VALUES (?, ?)", (key, now))
            epoch, head = heads.get(new.channel) or self._channel(db, new.channel)
            head += 1
            heads[new.channel] = (epoch, head)
            rows.append(
                (
                    new.channel,
                    head,
                    new.event,
                    orjson.dumps(new.payload),
                    new.timestamp,
                    new.sender,
                    key,
                    now,
                )
            )
            stored.append(
                StoredEvent(
                    new.channel, head, epoch, new.event, new.payload, new.timestamp, new.sender, key
                )
            )
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute(
            "INSERT INTO clients (client_id, ack_seq) VALUES (?, ?) "
            "ON CONFLICT(client_id) DO UPDATE SET ack_seq = max(ack_seq, excluded.ack_seq)",
            (client_id, ack_seq),
        )
        return stored

    async def channel(self, channel: str) -> ChannelInfo:
        def query() -> ChannelInfo:
            db = self._connect()
            epoch, head = self._channel(db, channel)
            row = db.execute(
                "SELECT min(offset) FROM events WHERE channel = ?", (channel,)
            ).fetchone()
            first = int(row[0]) if row and row[0] is not None else head + 1
            return ChannelInfo(epoch, head, first)

        return await self._run(query)

    async def read(self, channel: str, after: int, limit: int) -> list[StoredEvent]:
        def query() -> list[StoredEvent]:
            db = self._connect()
            epoch, _ = self._channel(db, channel)
            rows = db.execute(
                "SELECT offset, event, payload, timestamp, sender, ikey FROM events "
                "WHERE channel = ? AND offset > ? ORDER BY offset LIMIT ?",
                (channel, after, limit),
            ).fetchall()
            return [
                StoredEvent(channel, r[0], epoch, r[1], orjson.loads(r[2]), r[3], r[4], r[5])
                for r in rows
            ]

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
