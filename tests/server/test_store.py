"""The server's storage rules (``_rules.py``) on each store: offsets, retention by count and by
age, idempotency keys per user, watermarks, client_id binding; and SQLite's own layout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from trio_realtime.server import ChannelInfo, MemoryStore, SqliteStore, Store
from trio_realtime.server._rules import Retention, commit
from trio_realtime.server._store import Message, NewEvent


def ev(n: int, key: str | None = None) -> NewEvent:
    return NewEvent("ch", "e", {"n": n}, n, "u", key)


class Ruled:
    """A store with the server's rules in front of it (what the engine does on each commit)."""

    def __init__(self, store: Store, **retention: Any) -> None:
        self.store = store
        self.retention = Retention(**retention)
        self.path = getattr(store, "path", None)

    async def commit_many(
        self, requests: Sequence[tuple[str, int, Sequence[NewEvent]]]
    ) -> list[list[Message | None] | None]:
        with_users = [
            (client_id, next((e.sender for e in events if e.sender), None), ack_seq, events)
            for client_id, ack_seq, events in requests
        ]
        return await commit(self.store, with_users, retention=self.retention)

    async def commit(
        self, client_id: str, ack_seq: int, events: Sequence[NewEvent]
    ) -> list[Message | None] | None:
        (stored,) = await self.commit_many([(client_id, ack_seq, events)])
        return stored

    async def client_ack(self, client_id: str) -> int:
        row = (await self.store.load(clients=(client_id,))).clients.get(client_id)
        return row.ack_seq if row is not None else 0

    async def bind_client(self, client_id: str, user: str) -> bool:
        """Whether ``user`` may resume ``client_id`` (the engine's check at resume)."""
        row = (await self.store.load(clients=(client_id,))).clients.get(client_id)
        return row is None or row.owner in (None, user)

    async def channel(self, name: str) -> ChannelInfo:
        return (await self.store.load(channels=(name,))).channel(name)

    def __getattr__(self, name: str) -> Any:  # read, mark_read, receipts, aclose
        return getattr(self.store, name)


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    def factory(**retention: Any) -> Ruled:
        if request.param == "memory":
            return Ruled(MemoryStore(), **retention)
        return Ruled(SqliteStore(tmp_path / "s.db"), **retention)

    return factory


async def test_offsets_watermark_and_count_retention(make: Any) -> None:
    store = make(count=3)
    stored = await store.commit("c1", 5, [ev(i) for i in range(5)])
    assert [s.offset for s in stored] == [1, 2, 3, 4, 5]
    assert await store.client_ack("c1") == 5
    await store.commit("c1", 4, [])  # never moves back
    assert await store.client_ack("c1") == 5
    info = await store.channel("ch")
    assert (info.head, info.first) == (5, 3)
    assert [s.offset for s in await store.read("ch", 0, 10)] == [3, 4, 5]
    await store.aclose()


async def test_age_retention(make: Any) -> None:
    store = make(age=1e-9)  # anything stored before the current commit is too old
    await store.commit("c1", 2, [ev(1), ev(2)])
    await store.commit("c1", 3, [ev(3)])
    info = await store.channel("ch")
    assert info.head == 3
    assert [s.offset for s in await store.read("ch", 0, 10)] == [3]
    assert info.first == 3  # a client at offset 0 or 1 now gets recovered: false
    await store.aclose()


async def test_caller_keys_dedup_across_clients_own_keys_do_not(make: Any) -> None:
    store = make()
    first = await store.commit("a", 1, [ev(1, "order-1"), ev(2, "a:2")])
    again = await store.commit("b", 1, [ev(1, "order-1"), ev(2, "a:2")])
    assert first[0] is not None
    assert again[0] is None  # same caller-chosen key: not stored twice
    # "a:2" has the shape of a's default key: a's own keys are deduplicated by seq, not
    # remembered as caller keys, so b's event with that key is stored.
    assert again[1] is not None
    await store.aclose()


async def test_read_watermarks_only_move_forward(make: Any) -> None:
    store = make()
    assert await store.receipts("ch") == {}
    assert await store.mark_read("ch", "alice", 5)
    assert not await store.mark_read("ch", "alice", 3)
    assert not await store.mark_read("ch", "alice", 5)
    assert await store.mark_read("ch", "bob", 1)
    assert await store.mark_read("ch", "alice", 9)
    assert await store.receipts("ch") == {"alice": 9, "bob": 1}
    assert await store.receipts("other") == {}
    await store.aclose()


async def test_a_seq_stored_through_one_connection_is_not_stored_again_through_another(
    make: Any,
) -> None:
    """Two connections of one client can overlap (the old one is not known dead yet): both may
    carry the same seq to the committer. Whichever commits second stores nothing."""
    store = make()

    def seq(n: int) -> NewEvent:
        return NewEvent("ch", "e", {"n": n}, n, "u", f"c1:{n}", n)

    first = await store.commit("c1", 2, [seq(1), seq(2)])
    again = await store.commit("c1", 3, [seq(2), seq(3)])  # 2 again, then the new 3
    assert [s.offset for s in first if s] == [1, 2]
    assert again[0] is None
    assert again[1] is not None
    assert again[1].offset == 3
    # In one transaction too (commit_many of both connections' requests).
    both = await store.commit_many([("c1", 4, [seq(4)]), ("c1", 4, [seq(4)])])
    assert both[1] == [None]
    assert [e.payload["n"] for e in await store.read("ch", 0, 10)] == [1, 2, 3, 4]
    await store.aclose()


async def test_reads_start_and_stop_anywhere_across_commits(make: Any) -> None:
    """SQLite keeps what one transaction appends to a channel as one block: reads that start
    or stop inside a block, or span several, give exactly the events asked for."""
    store = make()
    for start in (1, 6, 11):
        await store.commit("c1", start + 4, [ev(n) for n in range(start, start + 5)])
    await store.commit_many([("c2", 1, [ev(16)]), ("c3", 1, [ev(17)])])  # one block for both
    everything = await store.read("ch", 0, 100)
    assert [e.offset for e in everything] == list(range(1, 18))
    assert [e.payload["n"] for e in everything] == list(range(1, 18))
    for after in range(18):
        for limit in (1, 3, 7, 100):
            got = [e.offset for e in await store.read("ch", after, limit)]
            assert got == list(range(after + 1, min(after + limit, 17) + 1)), (after, limit)
    assert await store.read("elsewhere", 0, 10) == []
    await store.aclose()


async def test_payloads_come_back_as_they_went_in(make: Any) -> None:
    odd = [0.30000000000000004, -0.0, 2**63 - 1, "é\u2028\"'", None, [], {"a": [1, {"b": None}]}]
    store = make()
    await store.commit("c1", 1, [NewEvent("ch", "e", odd, 7, None, None)])
    (event,) = await store.read("ch", 0, 10)
    assert event.payload == odd
    assert (event.event, event.timestamp, event.sender, event.idempotency_key) == (
        "e",
        7,
        None,
        None,
    )
    await store.aclose()


async def test_a_database_of_the_one_row_per_event_layout_is_moved_into_blocks(
    tmp_path: Path,
) -> None:
    import sqlite3

    import orjson

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE channels (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, head INTEGER NOT NULL);
        CREATE TABLE events (
            channel TEXT NOT NULL, offset INTEGER NOT NULL, event TEXT NOT NULL,
            payload BLOB NOT NULL, timestamp INTEGER NOT NULL, sender TEXT, ikey TEXT,
            stored_at REAL NOT NULL, PRIMARY KEY (channel, offset)
        ) WITHOUT ROWID;
        INSERT INTO channels VALUES ('ch', 'e0', 2);
        """
    )
    for n in (1, 2):
        db.execute(
            "INSERT INTO events VALUES ('ch', ?, 'e', ?, ?, 'u', ?, 1e12)",
            (n, orjson.dumps({"n": n}), n, f"k{n}"),
        )
    db.commit()
    db.close()
    store = Ruled(SqliteStore(path))
    assert [(e.offset, e.payload, e.idempotency_key) for e in await store.read("ch", 0, 10)] == [
        (1, {"n": 1}, "k1"),
        (2, {"n": 2}, "k2"),
    ]
    (stored,) = await store.commit("c1", 1, [ev(3)])
    assert stored is not None
    assert (stored.offset, stored.epoch) == (3, "e0")
    await store.aclose()
    db = sqlite3.connect(path)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert "events" not in tables


async def test_a_client_id_is_bound_to_the_sender_of_its_first_commit(make: Any) -> None:
    store = make()
    assert await store.bind_client("c1", "bob")  # unknown: nobody owns it yet, nothing written
    await store.commit("c1", 1, [NewEvent("ch", "e", 1, 1, "alice", "c1:1", 1)])
    assert await store.bind_client("c1", "alice")
    assert not await store.bind_client("c1", "bob")
    if store.path is not None:
        import sqlite3

        db = sqlite3.connect(store.path)
        rows = db.execute("SELECT client_id, user FROM clients").fetchall()
        db.close()
        assert rows == [("c1", "alice")]  # the resume of "c1" by bob left no row
    await store.aclose()


async def test_caller_keys_are_scoped_per_user(make: Any) -> None:
    store = make()
    (alice,) = await store.commit("a", 1, [NewEvent("ch", "e", 1, 1, "alice", "order-1", 1)])
    (bob,) = await store.commit("b", 1, [NewEvent("ch", "e", 2, 2, "bob", "order-1", 1)])
    (again,) = await store.commit("a2", 1, [NewEvent("ch", "e", 3, 3, "alice", "order-1", 1)])
    assert alice is not None  # the same key from two users: two events
    assert bob is not None
    assert again is None  # alice's key again, from another of her clients: a duplicate
    await store.aclose()


async def test_an_earlier_database_binds_client_ids_to_the_senders_of_their_events(
    tmp_path: Path,
) -> None:
    import sqlite3

    import orjson

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE clients (client_id TEXT PRIMARY KEY, ack_seq INTEGER NOT NULL);
        CREATE TABLE channels (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, head INTEGER NOT NULL);
        CREATE TABLE blocks (
            channel TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
            stored_at REAL NOT NULL, events BLOB NOT NULL, PRIMARY KEY (channel, first)
        );
        CREATE TABLE ikeys (key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
        INSERT INTO clients VALUES ('cid-a', 1), ('cid-b', 1), ('cid-quiet', 3);
        INSERT INTO channels VALUES ('ch', 'e0', 2), ('!', 'e2', 1), ('never-used', 'e1', 0);
        INSERT INTO ikeys VALUES ('order-1', 1e12);
        """
    )
    block = orjson.dumps([["e", {"n": 1}, 1, "alice", "cid-a:1"], ["e", 2, 2, "bob", "cid-b:1"]])
    db.execute("INSERT INTO blocks VALUES ('ch', 1, 2, 1e12, ?)", (block,))
    # Caller keys were free-form: mallory published under bob's default key, in a channel that
    # sorts first. A client_id with events of two senders belongs to no one who can resume it.
    forged = orjson.dumps([["e", 0, 1, "mallory", "cid-b:2"]])
    db.execute("INSERT INTO blocks VALUES ('!', 1, 1, 1e12, ?)", (forged,))
    db.commit()
    db.close()
    store = Ruled(SqliteStore(path))
    assert not await store.bind_client("cid-a", "bob")  # seen in alice's default keys: hers
    assert await store.bind_client("cid-a", "alice")
    assert await store.client_ack("cid-a") == 1
    assert not await store.bind_client("cid-b", "mallory")  # contested: refused (4003) to all
    assert not await store.bind_client("cid-b", "bob")
    await store.aclose()
    db = sqlite3.connect(path)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    channels = db.execute("SELECT name FROM channels").fetchall()
    db.close()
    assert "ikeys" not in tables
    assert sorted(channels) == [("!",), ("ch",)]  # the one that never held an event is forgotten


async def test_what_one_commit_appends_is_kept_in_bounded_blocks(tmp_path: Path) -> None:
    """A read decodes the blocks it touches whole: one commit of 3 MB is kept in blocks of at
    most BLOCK_BYTES (or one larger event), and reads anywhere in it come back right."""
    import sqlite3

    from trio_realtime.server._sqlite import BLOCK_BYTES

    store = Ruled(SqliteStore(tmp_path / "s.db"))
    blob = "x" * 30_000
    events = [NewEvent("ch", "e", {"n": n, "blob": blob}, n, "u", None) for n in range(100)]
    events.append(NewEvent("ch", "e", {"n": 100, "blob": "y" * (BLOCK_BYTES * 2)}, 100, "u", None))
    await store.commit("c1", 101, events)
    for after in (0, 7, 8, 9, 55, 99):
        got = await store.read("ch", after, 3)
        assert [e.offset for e in got] == list(range(after + 1, min(after + 4, 102)))
        assert [e.payload["n"] for e in got] == [e.offset - 1 for e in got]
    await store.aclose()
    db = sqlite3.connect(tmp_path / "s.db")
    blocks = db.execute("SELECT first, last, length(events) FROM blocks ORDER BY first").fetchall()
    db.close()
    assert len(blocks) > 10
    assert [b[0] for b in blocks[1:]] == [b[1] + 1 for b in blocks[:-1]]  # contiguous
    assert (blocks[0][0], blocks[-1][1]) == (1, 101)
    assert all(size <= BLOCK_BYTES for _, _, size in blocks[:-1])
    assert blocks[-1][:2] == (101, 101)  # the lone large event: a block of its own


async def test_an_earlier_database_keeps_hiding_what_its_retention_hid(tmp_path: Path) -> None:
    """Earlier versions kept no ``first``: their reads hid events older than the newest 100,000
    (the default retention). The conversion keeps them hidden."""
    import sqlite3

    import orjson

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE channels (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, head INTEGER NOT NULL);
        CREATE TABLE blocks (
            channel TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
            stored_at REAL NOT NULL, events BLOB NOT NULL, PRIMARY KEY (channel, first)
        );
        INSERT INTO channels VALUES ('big', 'e0', 100003), ('small', 'e0', 2);
        """
    )
    rows = [["e", n, n, "u", None] for n in range(1, 6)]  # offsets 1..5 of a straddling block
    db.execute("INSERT INTO blocks VALUES ('big', 1, 5, 1e12, ?)", (orjson.dumps(rows),))
    db.execute("INSERT INTO blocks VALUES ('small', 1, 2, 1e12, ?)", (orjson.dumps(rows[:2]),))
    db.commit()
    db.close()
    store = Ruled(SqliteStore(path))
    assert (await store.channel("big")).first == 4  # the newest 100,000 of 100,003
    assert [e.offset for e in await store.read("big", 0, 10)] == [4, 5]
    assert (await store.channel("small")).first == 1
    await store.aclose()


async def test_a_database_without_generations_reads_them_as_0_and_keeps_new_ones(
    tmp_path: Path,
) -> None:
    """Client rows of a database made before the fencing generation existed read back with
    generation 0; a generation written after the migration is kept across a reopen."""
    import sqlite3

    from trio_realtime.server import ClientRow, ClientUpdate, WriteBatch

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE clients (client_id TEXT PRIMARY KEY, ack_seq INTEGER NOT NULL, user TEXT);
        INSERT INTO clients VALUES ('c1', 4, 'alice');
        """
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.open()
    row = (await store.load(clients=("c1",))).clients["c1"]
    assert row == ClientRow("alice", 4, 0)
    await store.write(WriteBatch(1.0, clients=(ClientUpdate("c1", row, ClientRow("alice", 4, 3)),)))
    await store.aclose()
    store = SqliteStore(path)
    await store.open()
    assert (await store.load(clients=("c1",))).clients["c1"] == ClientRow("alice", 4, 3)
    await store.aclose()
