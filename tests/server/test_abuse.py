"""The reference server against an attacker (issue 15): a raw client speaking the JSON protocol by
hand, one test per way a user could lose another's data, grow the server's memory or stop it, and
for the limits and authorization that close those ways.

Each test that takes ``front`` (directly or through ``server``) runs over both fronts (conftest):
the engine over the in-memory transport, served by ``RealtimeServer.handle`` directly, and behind
its WebSocket front. Only the two tests of a subscriber that does not read (p6) are WebSocket
only: they need a link whose sends wait on a peer not reading (see there)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trio_realtime.server import (
    HmacAuthenticator,
    MemoryStore,
    ServerConfig,
    SqliteStore,
    make_token,
)

from ..figures import record
from ._raw import (
    Frame,
    Front,
    RunningServer,
    connect,
    dumps,
    history,
    is_error,
    nested,
    open_front,
    presence,
    rss,
)

MB = 1_000_000
MiB = 1024 * 1024


@pytest.fixture(params=["memory", "sqlite"], ids=["memory_store", "sqlite_store"])
async def server(
    front: Front, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RunningServer]:
    """The server on each store and behind each front: the rules are the server's and the
    stores', for both; the engine is the same whatever carries its messages."""
    store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "server.db")
    async with open_front(front, store) as running:
        yield running


def sqlite_server(
    front: Front, path: Path, config: ServerConfig | None = None
) -> contextlib.AbstractAsyncContextManager[RunningServer]:
    return open_front(front, SqliteStore(path), config=config)


def typing(channel: str, value: object = True) -> Frame:
    return {"type": "meta", "kind": "typing", "channel": channel, "typing": value}


def non_fatal(frame: Frame) -> bool:
    return frame.get("fatal", False) is False


def codes(frames: list[Frame]) -> list[tuple[str, Any]]:
    return [(f["code"], f.get("seq")) for f in frames if f.get("type") == "error"]


def request_store(server: RunningServer) -> str:
    return type(server.engine.store).__name__


# --- 1. a client_id is bound to its user ---------------------------------------------------------


async def test_p1_another_user_cannot_resume_a_client_id(server: RunningServer) -> None:
    async with connect(server, "alice", "cid-a") as alice:
        assert (await alice.publish(alice.event(payload=1)))["ack_seq"] == 1
        # Bob read "cid-a" in alice's idempotency keys: he resumes with it, sends three events
        # after her watermark, and a garbage frame to end his turn.
        async with connect(server, "bob", "cid-a", resume=False) as bob:
            resume = {
                "type": "resume",
                "protocol": 1,
                "client_id": "cid-a",
                "token": "bob",
                "last_ack_seq": 1,
            }
            events = [bob.event(payload=f"bob-{n}", seq=n) for n in (2, 3, 4)]
            for frame in (resume, *events, {"type": "x"}):  # one message each
                await bob.send(frame)
            code = await bob.closed()
        assert not [f for f in bob.frames if f["type"] in ("resume_response", "ack")]
        assert is_error("client_id_taken", fatal=True)(bob.frames[-1]), bob.frames
        assert code == 4003
        # Alice goes on; nothing of hers is lost.
        ack = await alice.publish(*(alice.event(payload=n) for n in (2, 3, 4)))
        assert ack["ack_seq"] == 4
        assert ack["duplicates"] == []
        # Bob's refused resume left nothing behind in the server's index of client_ids.
        await trio.testing.wait_all_tasks_blocked()
        (alice_session,) = server.engine.sessions
        assert server.engine._by_client == {"cid-a": {alice_session}}
    events = await history(server, "room")
    assert [(e["sender"], e["payload"]) for e in events] == [("alice", n) for n in (1, 2, 3, 4)]
    # Her own reconnect with it still resumes.
    async with connect(server, "alice", "cid-a") as alice_again:
        assert alice_again.seq == 4


async def test_p1_two_users_resuming_an_unbound_client_id_cannot_share_it(
    server: RunningServer,
) -> None:
    """A client_id is bound by its first commit. Two users who both resumed it before that (it
    was known ahead of its first event: say, read from an old database) cannot both store
    under it: the second one's commit is refused and its connection closed; on its next resume
    it gets 4003. The owner's watermark is never moved by the other."""
    async with (
        connect(server, "alice", "cid-x") as alice,
        connect(server, "mallory", "cid-x") as mallory,
    ):
        assert (await alice.publish(alice.event(payload="alice-1")))["ack_seq"] == 1
        await mallory.send(mallory.event(payload="mallory-1"))
        assert await mallory.closed() == 1011
        assert is_error("internal", fatal=True)(mallory.errors()[-1])
        ack = await alice.publish(alice.event(payload="alice-2"))
        assert (ack["ack_seq"], ack["duplicates"]) == (2, [])
    async with connect(server, "mallory", "cid-x", resume=False) as again:
        await again.resume("mallory")
        assert await again.closed() == 4003
    events = await history(server, "room")
    assert [e["payload"] for e in events] == ["alice-1", "alice-2"]


# --- 2. caller idempotency keys are per user -----------------------------------------------------


async def test_p2_caller_keys_are_deduplicated_per_user(server: RunningServer) -> None:
    async with connect(server, "bob", "cid-b") as bob:
        ack = await bob.publish(bob.event("orders", {"by": "bob"}, key="order-42"))
        assert (ack["ack_seq"], ack["duplicates"]) == (1, [])
    async with connect(server, "alice", "cid-a") as alice:
        ack = await alice.publish(alice.event("orders", {"by": "alice"}, key="order-42"))
        assert (ack["ack_seq"], ack["duplicates"]) == (1, [])
    events = await history(server, "orders")
    assert [(e["sender"], e["payload"]) for e in events] == [
        ("bob", {"by": "bob"}),
        ("alice", {"by": "alice"}),
    ]
    # The same key from another client of alice's is her duplicate: listed in the ack.
    async with connect(server, "alice", "cid-a2") as alice2:
        ack = await alice2.publish(
            alice2.event("orders", {"by": "alice", "again": 1}, key="order-42")
        )
        assert (ack["ack_seq"], ack["duplicates"]) == (1, [1])
    assert len(await history(server, "orders")) == 2


# --- 3. a payload the store cannot encode fails for nobody else ----------------------------------


async def test_p3_a_deep_payload_is_refused_alone(front: Front, tmp_path: Path) -> None:
    async with (
        sqlite_server(front, tmp_path / "server.db") as server,
        connect(server, "mallory") as mallory,
        connect(server, "alice") as alice,
    ):
        bad = mallory.event("room", {"deep": nested(300)})
        after = mallory.event("room", "after the deep one")
        good = alice.event("room", "alice's")
        async with trio.open_nursery() as nursery:  # the same moment: one commit if it can
            nursery.start_soon(mallory.send, bad, after)
            nursery.start_soon(alice.send, good)
        alice_ack = await alice.until(lambda f: f["type"] == "ack")
        mallory_ack = await mallory.until(lambda f: f["type"] == "ack" and f["ack_seq"] >= 2)
        assert alice_ack["ack_seq"] == 1
        assert mallory_ack["ack_seq"] == 2
        refusal = next(f for f in mallory.errors() if f.get("seq") == 1)
        assert (refusal["code"], non_fatal(refusal)) == ("invalid_payload", True)
        assert alice.errors() == []
        await mallory.ping()
        await alice.ping()
        events = await history(server, "room")
        assert sorted(e["payload"] for e in events) == ["after the deep one", "alice's"]


# --- 4. presence metadata the encoder cannot carry ----------------------------------------------


async def test_p4_deep_presence_metadata_is_refused_and_the_channel_still_works(
    server: RunningServer,
) -> None:
    async with connect(server, "mallory") as mallory:
        await mallory.send(presence("lobby", {"deep": nested(300)}))
        await mallory.ping()
        refusals = mallory.errors()
        assert [f["code"] for f in refusals] == ["presence_limit"]
        assert non_fatal(refusals[0])
        assert "seq" not in refusals[0]
        assert "rid" not in refusals[0]
        for user in ("alice", "bob"):
            async with connect(server, user) as member:
                answer = await member.subscribe("lobby")
                assert answer["type"] == "subscribed", answer
                state = await member.until(
                    lambda f: f.get("kind") == "presence_state" and f["channel"] == "lobby"
                )
                assert "mallory" not in state["members"]


# --- 5. presence metadata size and count ---------------------------------------------------------


async def test_p5_presence_metadata_size_and_entries_are_limited(server: RunningServer) -> None:
    async with connect(server, "watcher") as watcher, connect(server, "mallory") as mallory:
        await watcher.subscribe("lobby")
        await watcher.until(lambda f: f.get("kind") == "presence_state")
        await mallory.send(presence("lobby", {"blob": "x" * 5000}))  # over 4096 bytes encoded
        await mallory.send(presence("lobby", {"blob": "y" * 3000}))
        await mallory.ping()
        assert [f["code"] for f in mallory.errors()] == ["presence_limit"]
        diff = await watcher.until(lambda f: f.get("kind") == "presence_diff")
        assert diff["joins"]["mallory"]["metadata"] == {"blob": "y" * 3000}
        # One entry held (lobby): 99 more fit in the default max_presence_entries (100), the
        # 101st does not.
        await mallory.send(*(presence(f"room-{i}") for i in range(100)))
        await mallory.ping()
        refusals = mallory.errors()
        assert [f["code"] for f in refusals] == ["presence_limit"] * 2
        assert all(non_fatal(f) and "seq" not in f and "rid" not in f for f in refusals)


async def test_p5_a_presence_flood_leaves_server_memory_bounded(server: RunningServer) -> None:
    # 300 updates of 1 MB metadata to new channels (each message under max_frame_bytes, 1 MiB).
    # Kept, that is 300 MB (measured on the unbounded server: 305 MB); refused, nothing stays. The
    # bound (100 MB) is a third of what is sent, far above what the same traffic leaves when the
    # server keeps none of it (measured: 300 updates replacing one entry left under 1 MB).
    blob = "x" * MB
    async with connect(server, "mallory") as mallory:
        await mallory.send(presence("warm-up", {"blob": blob}))
        await mallory.ping()
        before = rss()
        for i in range(300):
            await mallory.send(presence(f"flood-{i}", {"blob": blob}))
        await mallory.ping(within=60)  # every update has been processed
        grown = rss() - before
    name = f"presence_flood_{request_store(server)}"
    if server.front != "websocket":
        name += f"_{server.front}_front"
    record(name, {"sent_bytes": 300 * MB, "rss_growth": grown})
    assert grown < 100 * MB, f"server RSS grew by {grown / MB:.0f} MB"


# --- 6. a subscriber that does not read ----------------------------------------------------------


async def _publish_big(server: RunningServer, count: int, size: int) -> None:
    """Publish ``count`` events of ``size`` bytes to "big", at most 4 unacknowledged (as a client
    pipelines: without a window the server's read-ahead of the publisher's messages, up to 64 of
    them, makes a transient peak whose leftovers are half of what the memory tests measure)."""
    async with connect(server, "publisher") as publisher:
        blob = "x" * size
        acked = 0
        for i in range(count):
            if publisher.seq - acked >= 4:
                acked = (await publisher.until(lambda f: f["type"] == "ack"))["ack_seq"]
            await publisher.send(publisher.event("big", {"i": i, "blob": blob}))
        ack = await publisher.until(lambda f: f["type"] == "ack" and f["ack_seq"] >= count)
        assert ack["ack_seq"] == count


# WebSocket only (both p6 tests): a subscriber that does not read is one whose socket buffers fill
# so that the server's sends wait. The memory transport buffers without bound, so the engine's
# sends never wait: over it the 4029 test's non-reader is never closed (session still open 5 s
# after the 30 MB) and the 100 MB published all pile up in this process (RSS +105 MB), as they
# would for any peer that takes everything.
async def test_p6_a_non_reader_holds_bounded_memory_then_catches_up(tmp_path: Path) -> None:
    # 200 events of 500 kB (100 MB) for a subscriber that reads nothing: the server may hold its
    # 1 MiB queue and what the sockets take (the kernel's, not in RSS), not the 100 MB (measured
    # on the unbounded server: 150 MB). The bound (50 MB) is half of what is published, and well
    # above what publishing the same 100 MB leaves when nobody subscribes (measured: 8 MB) or
    # with the bounded queue (12-16 MB).
    config = ServerConfig(send_queue_bytes=MiB, max_lag=60.0)
    count, size = 200, 500_000
    async with (
        sqlite_server("websocket", tmp_path / "server.db", config) as server,
        connect(server, "slow") as slow,
    ):
        answer = await slow.subscribe("big")
        assert (answer["type"], answer["offset"]) == ("subscribed", 0)
        before = rss()
        await _publish_big(server, count, size)
        grown = rss() - before
        record("non_reader", {"published_bytes": count * size, "rss_growth": grown})
        assert grown < 50 * MB, f"RSS grew by {grown / MB:.0f} MB for {count * size / MB:.0f} MB"
        # Now it reads: every event, in order, once (what fell out of the queue, from the store).
        slow.keep_events = False
        offsets: list[int] = []
        with trio.fail_after(30):
            while len(offsets) < count:
                event = await slow.until(lambda f: f["type"] == "event")
                assert event["payload"]["i"] == event["offset"] - 1
                offsets.append(event["offset"])
        assert offsets == list(range(1, count + 1))
        await slow.ping()
        assert slow.close_code is None


async def test_p6_a_non_reader_past_max_lag_is_closed_4029(tmp_path: Path) -> None:
    config = ServerConfig(send_queue_bytes=MiB, max_lag=0.5)
    async with (
        sqlite_server("websocket", tmp_path / "server.db", config) as server,
        connect(server, "slow") as slow,
    ):
        assert (await slow.subscribe("big"))["type"] == "subscribed"
        (session,) = [s for s in server.engine.sessions if s.user == "slow"]
        # 30 MB: more than the sockets hold, so the server's writer waits on a peer not reading.
        await _publish_big(server, 60, 500_000)
        with trio.fail_after(15):  # max_lag, then at most the 2 s the server gives a close
            await session.finished.wait()
        assert session.close_code == 4029
        # The close frame reaches the client only if its queue drained in time: either way the
        # link is over, and the only error it may have been told is too_slow.
        code = await slow.closed(within=30)
        assert code in (4029, 1006)
        assert {f["code"] for f in slow.errors()} <= {"too_slow"}


# --- 7. a burst of legitimate publishing ---------------------------------------------------------


async def test_p7_a_reader_gets_every_event_of_a_burst(front: Front, tmp_path: Path) -> None:
    per_client, channels = 7000, ("ch0", "ch1", "ch2")
    async with (
        sqlite_server(front, tmp_path / "server.db") as server,
        connect(server, "reader") as reader,
    ):
        for channel in channels:
            assert (await reader.subscribe(channel))["type"] == "subscribed"
        received: dict[str, list[tuple[int, Any]]] = {channel: [] for channel in channels}
        done = trio.Event()

        async def read() -> None:
            with trio.fail_after(60):
                while any(len(r) < per_client for r in received.values()):
                    frame = await reader.next()
                    if frame is None:
                        break
                    if frame["type"] == "event":
                        received[frame["channel"]].append((frame["offset"], frame["payload"]))
            done.set()

        async def publish(n: int) -> None:
            async with connect(server, f"p{n}", f"p{n}") as publisher:
                batch = [publisher.event(channels[n], i) for i in range(per_client)]
                ack = await publisher.publish(*batch, within=60)
                assert ack["ack_seq"] == per_client

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            async with trio.open_nursery() as publishers:  # three batches at once
                for n in range(len(channels)):
                    publishers.start_soon(publish, n)
            await done.wait()
        assert reader.close_code is None, f"reader closed {reader.close_code}: {reader.errors()}"
        for channel in channels:
            assert received[channel] == [(i + 1, i) for i in range(per_client)], channel


# --- 8. max_frame_bytes counts bytes -------------------------------------------------------------


async def test_p8_max_frame_bytes_counts_utf8_bytes(front: Front) -> None:
    """The engine counts a message in UTF-8 bytes, whatever front carried it (a WebSocket text
    frame, or a ``str`` over the memory transport)."""
    limit = 64 * 1024
    wide = "\U0001f600"  # 4 bytes in UTF-8
    config = ServerConfig(max_frame_bytes=limit)
    async with open_front(front, MemoryStore(), config=config) as server:
        async with connect(server, "alice") as alice:
            big = alice.event("room", wide * 20_000)  # 20 k characters, 80 kB
            assert len(dumps(big)) < limit < len(dumps(big).encode())
            await alice.send(big)
            ack = await alice.publish(alice.event("room", "small"))
            assert ack["ack_seq"] == 2
            assert [(f["code"], f.get("seq"), non_fatal(f)) for f in alice.errors()] == [
                ("too_large", 1, True)
            ]
        assert [e["payload"] for e in await history(server, "room")] == ["small"]
        # A batch over the limit in bytes (not in characters) closes 1009; the garbage after it
        # would close 4000 if the batch went through.
        async with connect(server, "bob") as bob:
            batch = [bob.event("room", wide * 10_000), bob.event("room", wide * 10_000)]
            await bob.send(*batch)
            await bob.send({"type": "x"})
            code = await bob.closed()
        assert code == 1009
        assert is_error("too_large", fatal=True)(bob.errors()[-1])


async def test_the_websocket_front_refuses_a_message_over_twice_the_limit_unread() -> None:
    """WebSocket only: trio-websocket stops reading a message over 2 x max_frame_bytes (it counts
    characters) and closes 1009, so no connection holds more than a few such messages."""
    limit = 64 * 1024
    async with (
        open_front(
            "websocket", MemoryStore(), config=ServerConfig(max_frame_bytes=limit)
        ) as server,
        connect(server, "alice") as alice,
    ):
        await alice.send(alice.event("room", "x" * (2 * limit + 1)))
        assert await alice.closed() == 1009
        assert not alice.errors()  # refused before the engine read it


# --- 9. numbers beyond 64 bits, and a typing frame the decoder choked on -------------------------


async def test_p9_integers_beyond_64_bits_are_refused(server: RunningServer) -> None:
    async with connect(server, "alice") as alice:
        ack = await alice.publish(
            alice.event("room", {"n": 10**30}),  # too big for any 64-bit integer
            alice.event("room", {"n": 2**63}),  # fits unsigned, not signed
            alice.event("room", {"n": -(2**63) - 1}),
            alice.event("room", {"n": 2**63 - 1, "m": -(2**63)}),  # the bounds themselves: fine
        )
        assert ack["ack_seq"] == 4
        refusals = alice.errors()
        assert [(f["code"], f.get("seq")) for f in refusals] == [
            ("invalid_payload", 1),
            ("invalid_payload", 2),
            ("invalid_payload", 3),
        ]
        assert all(non_fatal(f) for f in refusals)
    events = await history(server, "room")
    assert [e["payload"] for e in events] == [{"n": 2**63 - 1, "m": -(2**63)}]


async def test_p9_typing_null_is_a_protocol_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(server, "alice") as alice:
        await alice.send(typing("room", None))
        code = await alice.closed()
    assert is_error("protocol_error", fatal=True)(alice.frames[-1]), alice.frames
    assert "typing" in alice.frames[-1]["message"]
    assert code == 4000
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    async with connect(server, "bob") as bob:
        await bob.ping()


# --- authorization and tokens --------------------------------------------------------------------


async def test_channel_authorization_follows_token_claims(front: Front) -> None:
    secret = b"s" * 32
    token = make_token(secret, "alice", ttl=3600, subscribe=["room:*"], publish=["room:alice"])
    auditor = make_token(secret, "auditor", ttl=3600)  # no claims: every channel
    async with (
        open_front(front, MemoryStore(), HmacAuthenticator(secret)) as server,
        connect(server, "alice", token=token) as alice,
    ):
        assert (await alice.subscribe("room:1"))["type"] == "subscribed"
        refused = await alice.subscribe("secret")
        assert (refused.get("code"), non_fatal(refused)) == ("forbidden", True), refused
        ack = await alice.publish(
            alice.event("room:alice", "mine"),
            alice.event("room:1", "may read, not write"),
            alice.event("secret", "neither"),
        )
        assert ack["ack_seq"] == 3
        assert codes(alice.frames) == [("forbidden", None), ("forbidden", 2), ("forbidden", 3)]
        # Presence, typing and receipts need the right to subscribe.
        rid = alice.rid()
        await alice.send(presence("secret"))
        await alice.send(typing("secret"))
        await alice.send({"type": "meta", "kind": "receipt", "channel": "secret", "offset": 1})
        await alice.send(
            {"type": "meta", "kind": "receipts_query", "rid": rid, "channel": "secret"}
        )
        await alice.ping()
        later = alice.errors()[3:]
        assert [f["code"] for f in later] == ["forbidden"] * 4
        assert later[-1]["rid"] == rid
        assert all(non_fatal(f) for f in alice.errors())
        assert [e["payload"] for e in await history(server, "room:alice", token=auditor)] == [
            "mine"
        ]
        assert await history(server, "room:1", token=auditor) == []
        assert await history(server, "secret", token=auditor) == []


async def test_token_expiry_closes_4001_and_a_fresh_token_resumes(front: Front) -> None:
    secret = b"k" * 32
    async with open_front(front, MemoryStore(), HmacAuthenticator(secret)) as server:
        token = make_token(secret, "alice", ttl=2)
        async with connect(server, "alice", "cid-exp", token=token) as alice:
            assert (await alice.publish(alice.event("room", "before expiry")))["ack_seq"] == 1
            code = await alice.closed(within=6)
        assert is_error("token_expired", fatal=True)(alice.frames[-1]), alice.frames
        assert code == 4001
        fresh = make_token(secret, "alice", ttl=3600)
        async with connect(server, "alice", "cid-exp", token=fresh) as again:
            assert again.seq == 1  # resume_response.ack_seq: nothing lost
            assert (await again.publish(again.event("room", "after refresh")))["ack_seq"] == 2
        auditor = make_token(secret, "auditor", ttl=3600)
        events = await history(server, "room", token=auditor)
        assert [e["payload"] for e in events] == ["before expiry", "after refresh"]


# --- channels, binary frames ---------------------------------------------------------------------


async def test_channels_that_never_held_an_event_keep_no_row(front: Front, tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    async with sqlite_server(front, path) as server:
        async with connect(server, "alice") as alice:
            looked = await alice.subscribe("looked-at")
            await alice.send({"type": "unsubscribe", "rid": alice.rid(), "channel": "looked-at"})
            await alice.send(presence("present-only"))
            await alice.send(typing("typed-only"))
            await alice.send(
                {"type": "meta", "kind": "receipt", "channel": "read-only", "offset": 1}
            )
            await alice.send(
                {"type": "meta", "kind": "receipts_query", "rid": alice.rid(), "channel": "asked"}
            )
            await alice.publish(alice.event("used", "x"))
        async with connect(server, "bob", resume=False) as bob:
            response = await bob.resume("bob", channels={"resumed-only": {"offset": 0}})
            other = await bob.subscribe("looked-at")
        # An empty channel has the store's epoch, whoever asks and however often.
        assert other["epoch"] == looked["epoch"] == response["channels"]["resumed-only"]["epoch"]
    with contextlib.closing(sqlite3.connect(path)) as db:
        names = [name for (name,) in db.execute("SELECT name FROM channels ORDER BY name")]
    assert names == ["used"]


async def test_binary_messages_are_utf8_json(server: RunningServer) -> None:
    async with connect(server, "alice", "cid-bin", resume=False) as alice:
        resume = {"type": "resume", "protocol": 1, "client_id": "cid-bin", "last_ack_seq": 0}
        await alice.send_raw(dumps({**resume, "token": "alice"}).encode())
        assert (await alice.until(lambda f: True))["type"] == "resume_response"
        await alice.send_raw(dumps(alice.event("room", "bin \U0001f600")).encode())
        assert (await alice.until(lambda f: f["type"] == "ack"))["ack_seq"] == 1
        await alice.send_raw(b'{"type": "ping", "t": 1, "x": "\xff\xfe"}')  # not UTF-8
        code = await alice.closed()
    assert is_error("protocol_error", fatal=True)(alice.frames[-1])
    assert code == 4000
    assert [e["payload"] for e in await history(server, "room")] == ["bin \U0001f600"]


# --- limits --------------------------------------------------------------------------------------


async def test_subscriptions_and_typing_flags_per_connection_are_limited(front: Front) -> None:
    config = ServerConfig(max_subscriptions=3)
    async with open_front(front, MemoryStore(), config=config) as server:
        async with connect(server, "alice") as alice:
            for channel in ("s1", "s2", "s3"):
                assert (await alice.subscribe(channel))["type"] == "subscribed"
            over = await alice.subscribe("s4")
            assert (over.get("code"), non_fatal(over)) == ("too_many_subscriptions", True), over
            await alice.send({"type": "unsubscribe", "rid": alice.rid(), "channel": "s1"})
            assert (await alice.subscribe("s4"))["type"] == "subscribed"
        async with connect(server, "typist") as typist:
            for channel in ("t1", "t2", "t3", "t4"):
                await typist.send(typing(channel))
            await typist.ping()
            refusals = typist.errors()
            assert [f["code"] for f in refusals] == ["typing_limit"]
            assert non_fatal(refusals[0])


async def test_names_are_limited_in_utf8_bytes(server: RunningServer) -> None:
    fits, over = "é" * 128, "é" * 129  # 256 and 258 bytes, far fewer characters
    async with connect(server, "alice") as alice:
        assert (await alice.subscribe(fits))["type"] == "subscribed"
        refused = await alice.subscribe(over)
        assert (refused.get("code"), non_fatal(refused)) == ("invalid_name", True), refused
        ack = await alice.publish(
            alice.event(over, 1),
            alice.event(fits, 2, name="n" * 257),
            alice.event(fits, 3, key="k" * 257),
            alice.event(fits, 4),
        )
        assert ack["ack_seq"] == 4
        assert codes(alice.frames)[1:] == [
            ("invalid_name", 1),
            ("invalid_name", 2),
            ("invalid_name", 3),
        ]
    assert [e["payload"] for e in await history(server, fits)] == [4]
    # A client_id over the limit is refused at resume.
    async with connect(server, "bob", "c" * 257, resume=False) as bob:
        answer = await bob.resume("bob")
        assert (answer["type"], answer.get("fatal")) == ("error", True), answer
        code = await bob.closed()
    assert code == 4000


async def test_presence_entries_per_user_are_limited(front: Front) -> None:
    """``max_presence_entries`` counts the channels a user is present in, through any of its
    connections: a second connection (a reconnect re-announcing) in the same channel is free."""
    config = ServerConfig(max_presence_entries=2)
    async with (
        open_front(front, MemoryStore(), config=config) as server,
        connect(server, "alice") as first,
        connect(server, "alice") as second,
    ):
        await first.send(presence("p1"), presence("p2"))  # channels: p1, p2
        await second.send(presence("p1"))  # p1 again, through another connection
        await first.send(presence("p1", status="away"))  # an update, not a new entry
        await first.ping()
        await second.ping()
        await second.send(presence("p3"))  # a third channel
        await second.ping()
        assert first.errors() == []
        assert [f["code"] for f in second.errors()] == ["presence_limit"]
        await first.send(presence("p2", status="offline"))  # alice leaves p2: frees one
        await first.ping()
        await second.send(presence("p3"))
        await second.ping()
        assert len(second.errors()) == 1
        async with connect(server, "bob") as bob:  # the limit is alice's, not the channel's
            await bob.send(presence("p3"))
            await bob.ping()
            assert bob.errors() == []


async def test_the_close_reason_reaches_the_client_on_both_fronts(front: str) -> None:
    async with open_front(front, MemoryStore()) as server:
        async with connect(server, "alice", "cid-r") as alice:
            await alice.publish(alice.event(payload=1))
        async with connect(server, "bob", "cid-r", resume=False) as bob:
            await bob.resume("bob")
            assert await bob.closed() == 4003
            assert bob.close_reason == "client_id taken"


async def test_a_receipt_at_offset_zero_is_refused_and_keeps_no_row(front: Front) -> None:
    store = MemoryStore()
    async with open_front(front, store) as server, connect(server, "alice") as alice:
        receipt = {"type": "meta", "kind": "receipt", "channel": "never-used", "offset": 0}
        await alice.send(receipt)
        await alice.ping()
        assert [f["code"] for f in alice.errors()] == ["invalid_receipt"]
    assert await store.receipts("never-used") == {}


async def test_a_resume_with_too_many_channels_is_refused_for_good(front: Front) -> None:
    config = ServerConfig(max_subscriptions=2)
    async with (
        open_front(front, MemoryStore(), config=config) as server,
        connect(server, "alice", "cid-many", resume=False) as alice,
    ):
        channels = {f"ch{n}": {"offset": 0} for n in range(3)}
        await alice.resume("alice", channels=channels)
        assert await alice.closed() == 4003
        assert is_error("too_many_subscriptions", fatal=True)(alice.errors()[-1])
