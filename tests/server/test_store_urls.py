"""Stores chosen by URL: the registry, ``open_server(store=URL)``, ``serve(store=...)`` and the
CLI's ``--store``; and the public in-memory server for applications' tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trio_realtime import Acked, RealtimeConfig, open_realtime
from trio_realtime._errors import ConfigError
from trio_realtime.server import (
    AllowAll,
    MemoryStore,
    SqliteStore,
    open_server,
    register_store,
    store_from_url,
)
from trio_realtime.testing import open_memory_server

from ..helpers import collect

MEMORY = RealtimeConfig(durability="memory", network_monitor=False)


def test_urls_name_the_built_in_stores(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite://{tmp_path}/a/b.db")
    assert isinstance(store, SqliteStore)
    assert store.path == f"{tmp_path}/a/b.db"
    assert isinstance(store_from_url("memory:"), MemoryStore)
    for bad in ("nothing", "sqlite://", "memory:/x", ""):
        with pytest.raises(ConfigError):
            store_from_url(bad)


def test_a_store_registered_from_outside_is_found_by_its_scheme() -> None:
    made: list[str] = []

    def factory(url: str) -> MemoryStore:
        made.append(url)
        return MemoryStore()

    register_store("test-dict", factory)
    assert isinstance(store_from_url("test-dict://anything"), MemoryStore)
    assert made == ["test-dict://anything"]


async def test_open_server_takes_a_store_url(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/events.db"
    async with open_server(url, AllowAll()) as server:
        ws = f"ws://127.0.0.1:{server.port}/realtime"
        async with open_realtime(ws, config=MEMORY, token="alice") as conn:
            receipt = await conn.send("room", "e", 1)
            assert await receipt.wait() == Acked(seq=1)
    assert (tmp_path / "events.db").exists()  # opened (created) by the server, and stored there
    store = SqliteStore(tmp_path / "events.db")
    assert [e.payload for e in await store.read("room", 0, 10)] == [1]
    await store.aclose()


def test_the_cli_refuses_an_unknown_store_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trio_realtime", "serve", "--port", "0", "--store", "nope://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no store for 'nope://x'" in out.stderr
    assert "Traceback" not in out.stderr


async def test_the_memory_server_serves_clients_under_a_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_server() as server:
        connector = server.connector()
        async with (
            open_realtime(server.url, config=MEMORY, token="bob", connector=connector) as bob,
            open_realtime(server.url, config=MEMORY, token="alice", connector=connector) as alice,
        ):
            await bob.subscribe("room")
            receipt = await alice.send("room", "hello", {"n": 1})
            assert await receipt.wait() == Acked(seq=1)
            (message,) = await collect(bob, "room", 1)
            assert (message.sender, message.payload) == ("alice", {"n": 1})
            assert server.drop("alice") == 1
