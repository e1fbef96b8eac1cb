"""Presence: full state on subscribe then diffs, grace period on reconnect, leave after timeout.

Two and three real clients against the reference server on loopback, and exact timings under
MockClock against the same server in memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_realtime import (
    ConnectionState,
    LocalProtocolError,
    PresenceChange,
    PresenceMember,
    PresenceStatus,
    open_realtime,
)
from trio_realtime.server import AllowAll, ServerConfig, SqliteStore, open_server

from .conftest import MEMORY, URL, drop, memory_server, next_item, wait_state, watch_presence

ONLINE, AWAY, BUSY, OFFLINE = (
    PresenceStatus.ONLINE,
    PresenceStatus.AWAY,
    PresenceStatus.BUSY,
    PresenceStatus.OFFLINE,
)


#: The server's presence_timeout in the loopback reconnect test (real seconds).
GRACE = 0.5


def summary(change: object) -> tuple[dict[str, str], list[str]]:
    """A change as ({user: status} joined, [users] left)."""
    assert isinstance(change, PresenceChange)
    return (
        {user: m.status.value for user, m in change.joins.items()},
        sorted(change.leaves),
    )


async def test_state_then_diffs_in_order_with_three_clients(tmp_path: Path) -> None:
    store = SqliteStore(os.fspath(tmp_path / "server.sqlite3"))
    async with open_server(store, AllowAll(), config=ServerConfig(presence_timeout=5)) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"

        def client(user: str):  # type: ignore[no-untyped-def]
            return open_realtime(url, config=MEMORY, token=user)

        async with client("alice") as alice, client("bob") as bob, client("carol") as carol:
            changes = await watch_presence(bob, "room")
            await alice.presence.update(ONLINE, channel="room", metadata={"name": "Alice"})
            assert summary(await next_item(changes)) == ({"alice": "online"}, [])
            await carol.presence.update(BUSY, channel="room")
            assert summary(await next_item(changes)) == ({"carol": "busy"}, [])
            await alice.presence.update(AWAY, channel="room", metadata={"name": "Alice"})
            assert summary(await next_item(changes)) == ({"alice": "away"}, [])
            await carol.presence.update(OFFLINE, channel="room")
            assert summary(await next_item(changes)) == ({}, ["carol"])

            members = bob.presence.members("room")
            assert set(members) == {"alice"}
            assert members["alice"].status is AWAY
            assert members["alice"].metadata == {"name": "Alice"}
            assert bob.presence.is_online("alice", "room")
            assert not bob.presence.is_online("carol", "room")

            # A late subscriber gets the full state first, as one change.
            await carol.subscribe("room")
            late = carol.presence.changes("room")
            first = await next_item(late)
            if summary(first) == ({}, []):  # subscribed before the state arrived
                first = await next_item(late)
            assert summary(first) == ({"alice": "away"}, [])


async def test_quick_reconnect_within_the_grace_period_causes_no_flicker(tmp_path: Path) -> None:
    store = SqliteStore(os.fspath(tmp_path / "server.sqlite3"))
    config = ServerConfig(presence_timeout=GRACE)
    async with open_server(store, AllowAll(), config=config) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        async with (
            open_realtime(url, config=MEMORY, token="alice") as alice,
            open_realtime(url, config=MEMORY, token="bob") as bob,
            open_realtime(url, config=MEMORY, token="carol") as carol,
        ):
            changes = await watch_presence(bob, "room")
            await alice.presence.update(ONLINE, channel="room")
            assert summary(await next_item(changes)) == ({"alice": "online"}, [])

            states = alice.states()
            assert drop(server, "alice") == 1
            with trio.fail_after(10):
                seen = [await states.__anext__() for _ in range(3)]
            assert seen == [
                ConnectionState.CONNECTED,
                ConnectionState.RECONNECTING,
                ConnectionState.CONNECTED,
            ]
            assert alice.metrics.total_reconnects == 1
            # Nothing changes for bob, even well past the grace period (alice re-announced on
            # the new connection before her old one's entry expired)...
            with trio.move_on_after(3 * GRACE):
                unexpected = await changes.__anext__()
                pytest.fail(f"bob saw a presence change: {unexpected}")
            # ... and the next change he sees is carol's arrival.
            await carol.presence.update(ONLINE, channel="room")
            assert summary(await next_item(changes)) == ({"carol": "online"}, [])
            assert bob.presence.is_online("alice", "room")


async def test_member_leaves_exactly_presence_timeout_after_its_last_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server(ServerConfig(presence_timeout=10)) as ms,
        ms.client("bob") as bob,
    ):
        changes = await watch_presence(bob, "room")
        async with (
            ms.client("alice") as a1,
            ms.client("alice") as a2,
        ):
            await a1.presence.update(ONLINE, channel="room")
            assert summary(await next_item(changes)) == ({"alice": "online"}, [])
            await a2.presence.update(BUSY, channel="room")  # the newest entry is what others see
            assert summary(await next_item(changes)) == ({"alice": "busy"}, [])
            await a2.aclose()
            a2_closed = trio.current_time()
            await trio.sleep(3)
        a1_closed = trio.current_time()
        # alice stays "busy" while a2's entry lingers; when it expires she is a1's "online"...
        assert summary(await next_item(changes, within=100)) == ({"alice": "online"}, [])
        assert trio.current_time() - a2_closed == pytest.approx(10.0, abs=1e-6)
        # ... and when a1's expires too, she leaves.
        assert summary(await next_item(changes, within=100)) == ({}, ["alice"])
        assert trio.current_time() - a1_closed == pytest.approx(10.0, abs=1e-6)
        assert bob.presence.members("room") == {}


async def test_reconnect_after_the_grace_period_is_a_leave_then_a_join(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server(ServerConfig(presence_timeout=5)) as ms,
        ms.client("bob") as bob,
    ):
        changes = await watch_presence(bob, "room")
        online = ms.connector("alice")
        down = trio.Event()

        async def flaky(nursery: trio.Nursery, url: str, connect_timeout: float):  # type: ignore[no-untyped-def]
            if down.is_set():  # the network is gone for 20 s
                await trio.sleep(20)
            return await online(nursery, url, connect_timeout)

        async with open_realtime(URL, config=MEMORY, token="alice", connector=flaky) as alice:
            await alice.presence.update(ONLINE, channel="room", metadata={"v": 1})
            assert summary(await next_item(changes)) == ({"alice": "online"}, [])
            down.set()
            t0 = trio.current_time()
            ms.drop("alice")
            assert summary(await next_item(changes, within=100)) == ({}, ["alice"])
            assert trio.current_time() - t0 == pytest.approx(5.0, abs=1e-6)
            assert summary(await next_item(changes, within=100)) == ({"alice": "online"}, [])
            assert trio.current_time() - t0 >= 20
            await wait_state(alice, ConnectionState.CONNECTED)
        assert bob.presence.members("room")["alice"].metadata == {"v": 1}


async def test_bad_arguments_raise_typed_errors() -> None:
    async with (
        memory_server() as ms,
        ms.client("a") as conn,
    ):
        with pytest.raises(ValueError, match="status must be one of"):
            await conn.presence.update("sleepy", channel="room")
        with pytest.raises(ValueError, match="channel"):
            await conn.presence.update(ONLINE, channel="")
        with pytest.raises(TypeError, match="metadata"):
            await conn.presence.update(ONLINE, channel="room", metadata=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="JSON"):
            await conn.presence.update(ONLINE, channel="room", metadata={"x": object()})
        assert isinstance(PresenceMember(ONLINE), PresenceMember)
