"""The server stores: retention by count and by age, idempotency keys, watermarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trio_realtime.server import MemoryStore, SqliteStore
from trio_realtime.server._store import NewEvent


def ev(n: int, key: str | None = None) -> NewEvent:
    return NewEvent("ch", "e", {"n": n}, n, "u", key)


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    def factory(**options: Any) -> Any:
        if request.param == "memory":
            return MemoryStore(**options)
        return SqliteStore(tmp_path / "s.db", **options)

    return factory


async def test_offsets_watermark_and_count_retention(make: Any) -> None:
    store = make(retention_count=3)
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
    store = make(retention_age=1e-9)  # anything stored before the current commit is too old
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
