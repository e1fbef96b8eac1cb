"""Slow readers: lagging channels are fed from the store in turn, in pages sized to the queue, and
presence bookkeeping keeps nothing of a channel no one is present in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from trio_realtime.server import (
    AllowAll,
    MemoryStore,
    PresenceEntry,
    ServerConfig,
    SqliteStore,
    open_server,
)
from trio_realtime.server._store import Message

from ._raw import connect, open_front, presence

MiB = 1024 * 1024


async def test_lagging_channels_are_served_in_turn() -> None:
    """A busy channel that stays behind does not starve another lagging channel of the same
    subscriber (both are fed from the store, a page each in turn)."""
    config = ServerConfig(send_queue_bytes=256 * 1024, rate_limit=10_000, retention_count=1_000_000)
    store = MemoryStore()
    async with (
        open_server(store, AllowAll(), config=config) as server,
        connect(server, "sub") as sub,
        connect(server, "pub") as pub,
    ):
        sub.keep_events = False
        await sub.subscribe("A")
        await sub.subscribe("B")
        got_b = trio.Event()
        a_behind = trio.Event()
        got_a = 0

        async def read() -> None:
            nonlocal got_a
            while (frame := await sub.next()) is not None:
                if frame.get("type") == "event":
                    if frame["channel"] == "B":
                        got_b.set()
                    else:
                        got_a += 1
                        if got_a == 500:  # A is lagging by now (its flood outgrows the queue)
                            a_behind.set()
                await trio.sleep(0.0005)  # pacing: a reader slower than A's flood

        async def flood() -> None:
            while True:
                await pub.send(*[pub.event("A", {"p": "x" * 2000}) for _ in range(200)])
                await trio.sleep(0.02)  # pacing

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(flood)
            with trio.fail_after(10):
                await a_behind.wait()
            await pub.send(pub.event("B", {"hello": "y" * 150_000}))
            with trio.fail_after(10):
                await got_b.wait()
            nursery.cancel_scope.cancel()
        assert sub.close_code is None


class ReadSpy(MemoryStore):
    """Records the bytes of what each read returned."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []

    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        events = await super().read(channel, after, limit)
        self.reads.append(sum(len(e.payload["blob"]) for e in events))
        return events


async def test_a_replay_of_large_events_reads_pages_that_fit_the_queue() -> None:
    """A subscriber replaying 40 events of 700 kB (28 MB) from offset 0 reads a few at first,
    then pages of at most half its queue (plus one event): never the whole replay at once."""
    size, count = 700_000, 40
    config = ServerConfig(send_queue_bytes=4 * MiB, max_frame_bytes=2 * MiB)
    store = ReadSpy()
    async with open_server(store, AllowAll(), config=config) as server:
        async with connect(server, "pub") as pub:
            for i in range(count):
                await pub.publish(pub.event("big", {"i": i, "blob": "x" * size}))
        store.reads.clear()
        async with connect(server, "sub") as sub:
            sub.keep_events = False
            await sub.subscribe("big", offset=0)
            got: list[Any] = []
            with trio.fail_after(30):
                while len(got) < count:
                    frame = await sub.until(lambda f: f["type"] == "event")
                    got.append(frame["payload"]["i"])
        assert got == list(range(count))
    assert store.reads[0] <= 8 * size  # the first page: 8 events, before their size is known
    assert max(store.reads[1:]) <= 2 * MiB + size
    assert len(store.reads) >= count * size // (2 * MiB + size)


async def test_presence_keeps_nothing_of_a_channel_everyone_left() -> None:
    store = MemoryStore()
    async with open_front("memory", store) as server, connect(server, "alice") as alice:
        for n in range(300):
            await alice.send(presence(f"room-{n}"), presence(f"room-{n}", status="offline"))
        await alice.ping()
        assert alice.errors() == []
        assert await store.presence_channels("alice") == set()
        assert await store.presence_of(next(iter(server.engine.sessions)).id) == []


async def test_a_reconnect_re_announcing_its_channels_is_within_the_limit() -> None:
    """Entries of a connection in its grace period do not count again when the user's new
    connection announces the same channels: the limit is on channels per user."""
    config = ServerConfig(max_presence_entries=3, presence_timeout=60)
    store = MemoryStore()
    async with open_front("memory", store, config=config) as server:
        async with connect(server, "alice") as old:
            await old.send(*[presence(c) for c in "abc"])
            await old.ping()
        async with connect(server, "alice") as new:  # within the old one's grace period
            await new.send(*[presence(c) for c in "abc"])
            await new.ping()
            assert new.errors() == []
            await new.send(presence("d"))
            await new.ping()
            assert [f["code"] for f in new.errors()] == ["presence_limit"]
        assert await store.presence_channels("alice") == set("abc")


async def test_resubscribing_while_events_flow_keeps_them_in_order(tmp_path: Path) -> None:
    """A subscriber that subscribes again to a channel it is subscribed to (with or without an
    unsubscribe first) from its cursor, while a publisher floods the channel, gets every event
    after ``subscribed`` from its cursor on, contiguous. (A bare re-subscribe used to let a
    live event through ahead of the replay.)"""
    total = 30_000
    config = ServerConfig(send_queue_bytes=64 * 1024, rate_limit=10_000)
    async with (
        # SQLite: its commits hold the fan-out lock long enough for a subscribe to wait on it.
        open_server(SqliteStore(tmp_path / "s.db"), AllowAll(), config=config) as server,
        connect(server, "alice") as alice,
        connect(server, "mallory") as mallory,
    ):
        alice.keep_events = False
        await alice.subscribe("room", offset=0)

        async def publish() -> None:
            for _ in range(total // 1000):
                await mallory.send(
                    *[mallory.event("room", {"pad": "p" * 100}) for _ in range(1000)]
                )
                await trio.sleep(0.01)  # pacing

        cursor, live, resubscribes, seen = 0, True, 0, 0
        pending: dict[int, int] = {}

        def state() -> str:
            sessions = {s.user: s for s in server.sessions}
            a = sessions.get("alice")
            server_side = (
                f"lagging={a.lagging} positions={a.positions} queued={a.out_bytes}" if a else "-"
            )
            return f"cursor={cursor} live={live} pending={pending} seen={seen}; {server_side}"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            with trio.move_on_after(60) as waited:
                while cursor < total:
                    frame = await alice.next()
                    assert frame is not None, alice.close_code
                    if frame["type"] == "subscribed":
                        cursor, live = pending.pop(frame["rid"]), True
                        assert frame["recovered"]
                    elif frame["type"] == "unsubscribed":
                        live = False
                    elif frame["type"] == "event" and live:
                        assert frame["offset"] == cursor + 1
                        cursor, seen = frame["offset"], seen + 1
                        if seen % 1500 == 0:
                            resubscribes += 1
                            rid = alice.rid()
                            pending[rid] = cursor
                            subscribe = {"type": "subscribe", "rid": rid, "channel": "room"}
                            subscribe["offset"] = cursor
                            if resubscribes % 3 == 0:
                                await alice.send(subscribe)  # a bare re-subscribe
                            else:
                                unsubscribe = {"type": "unsubscribe", "rid": alice.rid()}
                                unsubscribe["channel"] = "room"
                                await alice.send(unsubscribe, subscribe)
            assert not waited.cancelled_caught, f"stuck: {state()}"
            nursery.cancel_scope.cancel()
        assert resubscribes >= 10


class FlakyPresence(MemoryStore):
    """The first ``presence_of`` fails (a network store's blip)."""

    failed = False

    async def presence_of(self, connection: str) -> list[PresenceEntry]:
        if not self.failed:
            self.failed = True
            raise ConnectionError("the store went away for a moment")
        return await super().presence_of(connection)


async def test_a_presence_store_failure_does_not_end_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A departure the store fails to record is tried again; the server goes on serving (the
    presence task runs beside the committer: its failure used to end the whole server)."""
    config = ServerConfig(presence_timeout=0.2)
    store = FlakyPresence()
    async with open_front("memory", store, config=config) as server, connect(server, "bob") as bob:
        await bob.subscribe("room")
        async with connect(server, "alice") as alice:
            await alice.send(presence("room"))
            await alice.ping()
        # Alice leaves once the retry recorded her departure and her grace period passed.
        leave = await bob.until(
            lambda f: f.get("kind") == "presence_diff" and "alice" in f.get("leaves", {})
        )
        assert leave["channel"] == "room"
        ack = await bob.publish(bob.event("room", "still serving"))
        assert ack["ack_seq"] == 1
    assert store.failed
    assert "presence: a departure failed" in caplog.text


async def test_a_replay_whose_pages_change_size_reads_to_the_end() -> None:
    """Each catch-up page is sized by the events of the one before: with events that grow, every
    page has another size. A full page must never be taken for the end of the log (it was, when
    compared with the next page's size: the subscriber went live with events still unread)."""
    count = 3000
    config = ServerConfig(send_queue_bytes=64 * 1024, max_frame_bytes=4 * 1024 * 1024)
    store = MemoryStore()
    async with open_front("memory", store, config=config) as server:
        async with connect(server, "pub") as pub:
            for first in range(0, count, 500):
                batch = [
                    pub.event("grow", {"i": i, "pad": "x" * (50 + i // 2)})
                    for i in range(first, first + 500)
                ]
                await pub.publish(*batch)
        async with connect(server, "sub") as sub:
            sub.keep_events = False
            await sub.subscribe("grow", offset=0)
            got: list[int] = []
            with trio.fail_after(30):
                while len(got) < count:
                    frame = await sub.until(lambda f: f["type"] == "event")
                    got.append(frame["payload"]["i"])
            assert got == list(range(count))
