"""Several server nodes on one shared store (issue 22): what is stored through one node reaches the
subscribers of every node, in offset order and once; a client resumes on any node with nothing
lost; a resume's ack_seq stays final across nodes (the fence); presence is shared, and the
entries of a node that died leave after its lease and the grace period.

The nodes share one ``MemoryStore(shared=True)`` in this process (notices passed in memory)."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_realtime import Acked, RealtimeConfig, open_realtime
from trio_realtime.server import (
    AllowAll,
    ClientRow,
    MemoryStore,
    Notice,
    PresenceEntry,
    RealtimeServer,
    ServerConfig,
    WriteBatch,
    decode_notice,
    encode_notice,
    from_fields,
    open_server,
    to_fields,
)
from trio_realtime.server._store import new_epoch
from trio_realtime.testing import open_fault_proxy
from trio_realtime.transports import memory_transport_pair

from ..helpers import collect
from ._raw import RawClient, presence

QUICK = RealtimeConfig(
    durability="memory", initial_retry_delay=0.01, max_retry_delay=0.1, network_monitor=False
)


class Node:
    """One server node behind its own loopback listener; :meth:`kill` ends it at once (its
    connections aborted, no close handshake, nothing of it runs after)."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.server: RealtimeServer | None = None
        self.gone = trio.Event()

    @property
    def engine(self) -> RealtimeServer:
        assert self.server is not None
        return self.server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.engine.port}/realtime"

    async def run(
        self,
        store: MemoryStore,
        config: ServerConfig | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with self.scope:
                async with open_server(store, AllowAll(), config=config) as server:
                    self.server = server
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self.gone.set()

    async def kill(self) -> None:
        self.scope.cancel()
        await self.gone.wait()


@asynccontextmanager
async def open_nodes(
    store: MemoryStore, count: int, config: ServerConfig | None = None
) -> AsyncIterator[list[Node]]:
    nodes = [Node() for _ in range(count)]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run, store, config)
        yield nodes
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("count", [2, 3])
async def test_every_subscriber_on_every_node_sees_one_sequence(count: int) -> None:
    """Publishers on every node send to one channel at once (their commits race in the store);
    each node's subscriber gets every event, offsets 1..N with no gap and no duplicate."""
    store = MemoryStore(shared=True)
    per_publisher = 60
    total = per_publisher * count
    async with open_nodes(store, count) as nodes, trio.open_nursery() as nursery:
        subscribers = []
        for i, node in enumerate(nodes):
            sub = await nursery.start(_client, node.url, f"reader-{i}")
            await sub.subscribe("room")
            subscribers.append(sub)
        publishers = [
            await nursery.start(_client, n.url, f"writer-{i}") for i, n in enumerate(nodes)
        ]
        receipts: list[list[object]] = [[] for _ in publishers]

        async def publish(i: int) -> None:
            for k in range(per_publisher):
                receipts[i].append(await publishers[i].send("room", "n", [i, k]))

        async with trio.open_nursery() as senders:
            for i in range(count):
                senders.start_soon(publish, i)
        with trio.fail_after(20):
            for mine in receipts:
                assert [await r.wait() for r in mine] == [  # type: ignore[attr-defined]
                    Acked(seq=n) for n in range(1, per_publisher + 1)
                ]
        seen = [await collect(sub, "room", total) for sub in subscribers]
        nursery.cancel_scope.cancel()
    stored = await store.read("room", 0, total + 1)
    assert [e.offset for e in stored] == list(range(1, total + 1))
    for got in seen:
        assert [m.offset for m in got] == list(range(1, total + 1))
        assert [m.payload for m in got] == [e.payload for e in stored]
    # Each publisher's events in its own order; all of them, once.
    payloads = [tuple(e.payload) for e in stored]
    for i in range(count):
        assert [k for who, k in payloads if who == i] == list(range(per_publisher))


async def _client(
    url: str, user: str, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
) -> None:
    """A client for the test's nursery (cancelled with it)."""
    async with open_realtime(url, config=QUICK, token=user) as conn:
        task_status.started(conn)
        await trio.sleep_forever()


async def test_a_client_resumes_on_another_node_after_its_node_died() -> None:
    """Alice sends through node A (behind a proxy); A dies abruptly while her sends are on their
    way; she reconnects to B and resumes there: every event stored once, in order, and her
    channel recovered (no gap), for her and for Bob on B."""
    store = MemoryStore(shared=True)
    count = 60
    async with (
        open_nodes(store, 2) as (a, b),
        open_fault_proxy(a.engine.port) as proxy,
        open_realtime(b.url, config=QUICK, token="bob") as bob,
        open_realtime(
            f"ws://127.0.0.1:{proxy.port}/realtime", config=QUICK, token="alice"
        ) as alice,
    ):
        await bob.subscribe("room")
        await alice.subscribe("room")
        first = [await alice.send("room", "n", k) for k in range(count // 2)]
        with trio.fail_after(10):
            for receipt in first:
                await receipt.wait()
        assert any(s.user == "alice" for s in a.engine.sessions)
        proxy.target = ("127.0.0.1", b.engine.port)  # where her reconnect goes
        rest = [await alice.send("room", "n", k) for k in range(count // 2, count)]
        await a.kill()  # her last sends may be anywhere: sent, received, stored, acked or not
        with trio.fail_after(20):
            outcomes = [await receipt.wait() for receipt in first + rest]
        assert outcomes == [Acked(seq=n) for n in range(1, count + 1)]
        assert any(s.user == "alice" for s in b.engine.sessions)  # resumed on B
        got_alice = await collect(alice, "room", count)  # a Gap (not recovered) fails here
        got_bob = await collect(bob, "room", count)
    stored = await store.read("room", 0, count + 1)
    assert [e.payload for e in stored] == list(range(count))
    for got in (got_alice, got_bob):
        assert [(m.offset, m.payload) for m in got] == [(n + 1, n) for n in range(count)]


class GatedStore(MemoryStore):
    """Shared; once ``hold`` is set, the next write that appends waits for ``gate`` (``entered``
    is set when it is there)."""

    def __init__(self) -> None:
        super().__init__(shared=True)
        self.hold = False
        self.gate = trio.Event()
        self.entered = trio.Event()

    async def write(self, batch: WriteBatch) -> None:
        if self.hold and batch.appends:
            self.hold = False
            self.entered.set()
            await self.gate.wait()
        await super().write(batch)


@asynccontextmanager
async def running(server: RealtimeServer) -> AsyncIterator[trio.Nursery]:
    """Run ``server``'s tasks; its connections are served in the nursery yielded (cancel it to
    end the node at once)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield nursery
        nursery.cancel_scope.cancel()


def link(server: RealtimeServer, nursery: trio.Nursery, client_id: str) -> RawClient:
    """A raw in-memory link to ``server`` (its end served in ``nursery``)."""
    client, server_end = memory_transport_pair()
    nursery.start_soon(server.handle, server_end)
    return RawClient(client, client_id)


async def test_an_older_link_on_another_node_cannot_store_after_a_resume() -> None:
    """Client c1's old link on A received seq 1, whose commit is slow; c1 resumes on B, which
    answers ack_seq 0. The old commit lands after that answer: refused (the fence), so 0 was
    final; the client sends seq 1 again through B and it is stored once."""
    store = GatedStore()
    a = RealtimeServer(store, AllowAll())
    b = RealtimeServer(store, AllowAll())
    async with running(a) as on_a, running(b) as on_b:
        with trio.fail_after(10):
            old = link(a, on_a, "c1")
            assert (await old.resume("alice"))["ack_seq"] == 0
            store.hold = True
            await old.send(old.event(payload="one"))
            await store.entered.wait()  # A's commit of seq 1 is in the store, not written yet
            new = link(b, on_b, "c1")
            assert (await new.resume("alice"))["ack_seq"] == 0
            store.gate.set()
            outcome = await old.next()  # its commit's outcome: an ack, or the close
            assert outcome is None, f"the old link's commit was stored after the resume: {outcome}"
            assert old.close_code == 1001  # replaced
            assert await store.read("room", 0, 10) == []
            (row,) = (await store.load(clients=("c1",))).clients.values()
            assert row.ack_seq == 0  # the resume's answer stays true
            new.seq = 0
            ack = await new.publish(new.event(payload="one"))
            assert (ack["ack_seq"], ack.get("duplicates", [])) == (1, [])
        assert [e.payload for e in await store.read("room", 0, 10)] == ["one"]
        assert (await store.load(clients=("c1",))).clients["c1"].generation == 2


async def test_presence_is_shared_and_a_dead_nodes_users_leave_after_lease_and_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Alice is present through A: Bob, on B, sees her join live, Carol (subscribing later on
    B) sees her in the state. A dies (no clean leave): she leaves when A's lease has run out
    plus the grace period, not before, and once (B and C both outlive A; one of them reaps)."""
    store = MemoryStore(shared=True)
    config = ServerConfig(presence_timeout=10, node_lease=15, heartbeat_timeout=600)
    a, b, c = (
        RealtimeServer(store, AllowAll(), config, wall_clock=trio.current_time) for _ in range(3)
    )
    async with running(b) as on_b, running(c):
        async with running(a) as on_a:
            bob = link(b, on_b, "bob-1")
            await bob.resume("bob")
            assert (await bob.subscribe("room"))["type"] == "subscribed"
            state = await bob.until(lambda f: f.get("kind") == "presence_state")
            assert state["members"] == {}
            alice = link(a, on_a, "alice-1")
            await alice.resume("alice")
            await alice.send(presence("room", {"on": "a"}))
            diff = await bob.until(lambda f: f.get("kind") == "presence_diff")
            assert list(diff["joins"]) == ["alice"]
            assert diff["joins"]["alice"]["metadata"] == {"on": "a"}
            carol = link(b, on_b, "carol-1")
            await carol.resume("carol")
            await carol.subscribe("room")
            state = await carol.until(lambda f: f.get("kind") == "presence_state")
            assert list(state["members"]) == ["alice"]
            on_a.cancel_scope.cancel()  # A dies: nothing of it runs from here
        lease_end = (await store.renew_lease("probe", 0.0))[a.node]
        await store.drop_lease("probe")
        assert [e.user for e in await store.presence("room")] == ["alice"]
        diff = await bob.until(lambda f: f.get("kind") == "presence_diff", within=100)
        assert list(diff["leaves"]) == ["alice"]
        assert trio.current_time() == pytest.approx(lease_end + config.presence_timeout)
        assert await store.presence("room") == []
        with trio.move_on_after(3 * config.node_lease):
            await bob.until(lambda f: f.get("kind") == "presence_diff", within=math.inf)
        assert len([f for f in bob.frames if f.get("leaves")]) == 1
        assert a.node not in await store.renew_lease(b.node, trio.current_time() + 15)
        on_b.cancel_scope.cancel()


class LateNoticeStore(MemoryStore):
    """Shared; the notices of every node wait until ``deliver`` is set (late, as pub/sub may be)."""

    def __init__(self) -> None:
        super().__init__(shared=True)
        self.deliver = trio.Event()

    async def publish(self, notices: Sequence[Notice]) -> None:
        await self.deliver.wait()
        await super().publish(notices)


def offsets(client: RawClient, channel: str = "room") -> list[int]:
    return [f["offset"] for f in client.frames if f["type"] == "event" and f["channel"] == channel]


async def test_late_notices_neither_reorder_nor_repeat_nor_skip_events() -> None:
    """B has not heard of A's events 1-3 (notices late, no polling) when a subscriber on B
    replays them from the store, and when B stores event 4 itself: B first fans out 1-3 to the
    subscriber that lacks them, then 4, and the replayed one gets none of them twice."""
    store = LateNoticeStore()
    config = ServerConfig(node_poll_interval=3600)
    a = RealtimeServer(store, AllowAll(), config)
    b = RealtimeServer(store, AllowAll(), config)
    async with running(a) as on_a, running(b) as on_b:
        with trio.fail_after(10):
            live = link(b, on_b, "live")
            await live.resume("live")
            await live.subscribe("room")
            writer = link(a, on_a, "writer")
            await writer.resume("writer")
            await writer.publish(*(writer.event(payload=n) for n in (1, 2, 3)))
            replayed = link(b, on_b, "replayed")
            await replayed.resume("replayed")
            await replayed.subscribe("room", offset=0)
            await replayed.until(lambda f: f.get("offset") == 3)  # from the store, then live
            await live.ping()
            assert offsets(live) == []  # B has not heard of them
            local = link(b, on_b, "local")
            await local.resume("local")
            await local.publish(local.event(payload=4))
            await live.until(lambda f: f.get("offset") == 4)
            store.deliver.set()  # the late notices arrive (nothing new for B)
            await writer.publish(writer.event(payload=5))
            for client in (live, replayed):
                await client.until(lambda f: f.get("offset") == 5)
                await client.ping()
                assert offsets(client) == [1, 2, 3, 4, 5]


class StalledLeaseStore(MemoryStore):
    """Shared; once ``stall`` names a node, its lease renewals wait for ``resume``."""

    def __init__(self) -> None:
        super().__init__(shared=True)
        self.stall: str | None = None
        self.resume = trio.Event()

    async def renew_lease(self, node: str, until: float) -> dict[str, float]:
        if node == self.stall:
            await self.resume.wait()
        return await super().renew_lease(node, until)


async def test_a_node_taken_for_dead_that_renews_in_time_keeps_its_users_present(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A's lease renewals stall past its lease (a long pause, not a death): B sets Alice
    leaving at the lease's end plus the grace period. A renews before that: Alice stays, and B
    sends no leave."""
    store = StalledLeaseStore()
    config = ServerConfig(presence_timeout=10, node_lease=15, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config, wall_clock=trio.current_time)
    b = RealtimeServer(store, AllowAll(), config, wall_clock=trio.current_time)
    async with running(b) as on_b, running(a) as on_a:
        bob = link(b, on_b, "bob-1")
        await bob.resume("bob")
        await bob.subscribe("room")
        alice = link(a, on_a, "alice-1")
        await alice.resume("alice")
        await alice.send(presence("room"))
        await bob.until(lambda f: f.get("kind") == "presence_diff")
        store.stall = a.node
        lease_end = (await store.renew_lease("probe", 0.0))[a.node]
        await store.drop_lease("probe")
        await trio.sleep_until(lease_end + 6)  # past B's first look after A's lease ran out
        (entry,) = await store.presence("room")
        assert entry.leave_at == lease_end + config.presence_timeout  # B took A for dead
        store.resume.set()  # A renews (before the leave time)
        with trio.move_on_after(60):
            await bob.until(lambda f: f.get("kind") == "presence_diff", within=math.inf)
        assert [f for f in bob.frames if f.get("leaves")] == []
        (entry,) = await store.presence("room")
        assert entry.leave_at is None
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


class LosesNotices(MemoryStore):
    """Shared, but every notice is lost (pub/sub while a node reconnects)."""

    def __init__(self) -> None:
        super().__init__(shared=True)

    async def publish(self, notices: Sequence[Notice]) -> None:
        await trio.lowlevel.checkpoint()


async def test_events_reach_other_nodes_within_the_poll_interval_when_notices_are_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = LosesNotices()
    config = ServerConfig(node_poll_interval=2.0, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config)
    b = RealtimeServer(store, AllowAll(), config)
    async with running(a) as on_a, running(b) as on_b:
        reader = link(b, on_b, "reader")
        await reader.resume("reader")
        await reader.subscribe("room")
        writer = link(a, on_a, "writer")
        await writer.resume("writer")
        await writer.publish(*(writer.event(payload=n) for n in (1, 2, 3)))
        stored_at = trio.current_time()
        await reader.until(lambda f: f.get("offset") == 3, within=config.node_poll_interval + 0.1)
        assert trio.current_time() - stored_at <= config.node_poll_interval
        assert offsets(reader) == [1, 2, 3]
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


def test_notices_and_rows_serialize_generically() -> None:
    """What a store between processes keeps: a notice as bytes, rows as dicts of fields; a row
    stored before a field existed reads back with the field's default."""
    for notice in (
        Notice("n1", "room", head=7),
        Notice("n1", "röom", meta='{"type":"meta","x":"é"}'.encode(), skip_user="bob"),
    ):
        assert decode_notice(encode_notice(notice)) == notice
    row = ClientRow("alice", 4, 2)
    assert from_fields(ClientRow, to_fields(row)) == row
    assert from_fields(ClientRow, {"owner": "alice", "ack_seq": 4}) == ClientRow("alice", 4, 0)
    entry = PresenceEntry("room", "alice", "c1", "online", {"a": [1]}, 1, 2.5, 3.5, "n1")
    assert from_fields(PresenceEntry, to_fields(entry)) == entry


async def test_typing_and_receipts_reach_subscribers_on_other_nodes() -> None:
    """Alice types and reads through A: Bob, on B, gets both; Alice's own connection on B does
    not get her typing (never echoed to the typist), but gets her receipt."""
    store = MemoryStore(shared=True)
    a = RealtimeServer(store, AllowAll())
    b = RealtimeServer(store, AllowAll())
    async with running(a) as on_a, running(b) as on_b:
        with trio.fail_after(10):
            readers = []
            for user in ("bob", "alice"):
                reader = link(b, on_b, f"{user}-on-b")
                await reader.resume(user)
                await reader.subscribe("room")
                readers.append(reader)
            bob, alice_on_b = readers
            alice = link(a, on_a, "alice-on-a")
            await alice.resume("alice")
            await alice.publish(alice.event(payload=1))
            await alice.send({"type": "meta", "kind": "typing", "channel": "room", "typing": True})
            await alice.send({"type": "meta", "kind": "receipt", "channel": "room", "offset": 1})
            typing = await bob.until(lambda f: f.get("kind") == "typing")
            assert (typing["user"], typing["typing"]) == ("alice", True)
            for reader in (bob, alice_on_b):
                receipt = await reader.until(lambda f: f.get("kind") == "receipt")
                assert (receipt["user"], receipt["offset"]) == ("alice", 1)
            await alice_on_b.ping()
            assert [f for f in alice_on_b.frames if f.get("kind") == "typing"] == []
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


async def test_a_resume_on_another_node_answers_recovered_and_replays_the_rest() -> None:
    """A client read offsets 1-2 through A; A dies; meanwhile 3-4 were stored through B. Its
    resume on B answers ``recovered: true`` at head 4, under the same epoch, and replays 3-4
    (nothing else)."""
    store = MemoryStore(shared=True)
    a = RealtimeServer(store, AllowAll())
    b = RealtimeServer(store, AllowAll())
    async with running(b) as on_b:
        with trio.fail_after(10):
            async with running(a) as on_a:
                reader = link(a, on_a, "reader")
                await reader.resume("reader")
                epoch = (await reader.subscribe("room"))["epoch"]
                writer = link(b, on_b, "writer")
                await writer.resume("writer")
                await writer.publish(*(writer.event(payload=n) for n in (1, 2)))
                await reader.until(lambda f: f.get("offset") == 2)
                on_a.cancel_scope.cancel()
            await writer.publish(*(writer.event(payload=n) for n in (3, 4)))
            again = link(b, on_b, "reader")
            answer = await again.resume("reader", channels={"room": {"offset": 2, "epoch": epoch}})
            assert answer["channels"] == {"room": {"epoch": epoch, "offset": 4, "recovered": True}}
            await again.until(lambda f: f.get("offset") == 4)
            await again.ping()
            assert offsets(again) == [3, 4]
        on_b.cancel_scope.cancel()


class SlowPresenceRead(MemoryStore):
    """Shared; once ``hold`` is set, the next read of a channel's presence takes its rows, then
    waits for ``release`` before returning them (a read that is stale when it arrives)."""

    def __init__(self) -> None:
        super().__init__(shared=True)
        self.hold = False
        self.taken = trio.Event()
        self.release = trio.Event()

    async def presence(self, channel: str, user: str | None = None) -> list[PresenceEntry]:
        entries = await super().presence(channel, user)
        if self.hold and user is None:
            self.hold = False
            self.taken.set()
            await self.release.wait()
        return entries


def presence_view(frames: list[dict[str, Any]]) -> set[str]:
    """Who a client that applies the presence frames in order sees as present."""
    members: set[str] = set()
    for frame in frames:
        if frame.get("kind") == "presence_state":
            members = set(frame["members"])
        elif frame.get("kind") == "presence_diff":
            members |= set(frame.get("joins", {}))
            members -= set(frame.get("leaves", {}))
    return members


async def test_a_join_on_another_node_during_a_subscribe_is_not_lost_behind_the_state() -> None:
    """Bob subscribes on B; the presence state B reads for him is taken before Alice joins on A
    and arrives after her diff reached B: the diff goes out after the state, so Bob sees her."""
    store = SlowPresenceRead()
    a = RealtimeServer(store, AllowAll())
    b = RealtimeServer(store, AllowAll())
    async with running(a) as on_a, running(b) as on_b:
        with trio.fail_after(10):
            bob = link(b, on_b, "bob")
            await bob.resume("bob")
            store.hold = True
            await bob.send({"type": "subscribe", "rid": 1, "channel": "room"})
            await store.taken.wait()  # B read the (empty) state; it is on its way
            alice = link(a, on_a, "alice")
            await alice.resume("alice")
            await alice.send(presence("room"))
            await trio.testing.wait_all_tasks_blocked()  # her diff reached B
            store.release.set()
            await bob.until(lambda f: f.get("kind") == "presence_state")
            await bob.ping()
            assert presence_view(bob.frames) == {"alice"}
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


@pytest.mark.parametrize("seed", range(4))
async def test_under_churn_every_subscriber_gets_each_offset_once_in_order(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    """Three nodes; a publisher on each sends batches of random sizes; readers on every node,
    some from the start, some joining midway with a replay from offset 0, some slow (their
    queue overflows: they lag and catch up from the store). Each reads offsets 1..N exactly,
    whatever interleaving of local commits, other nodes' notices and catch-ups it went through."""
    rng = random.Random(seed)
    store = MemoryStore(shared=True)
    config = ServerConfig(send_queue_bytes=3000, node_poll_interval=0.5, heartbeat_timeout=600)
    nodes = [RealtimeServer(store, AllowAll(), config) for _ in range(3)]
    batches = [[rng.randint(1, 6) for _ in range(25)] for _ in nodes]
    total = sum(map(sum, batches))
    async with running(nodes[0]) as n0, running(nodes[1]) as n1, running(nodes[2]) as n2:
        nurseries = [n0, n1, n2]
        got: dict[str, list[int]] = {}
        joined_late = trio.Event()

        async def read(name: str, node: int, *, late: bool, slow: bool) -> None:
            reader = link(nodes[node], nurseries[node], name)
            reader.keep_events = False
            await reader.resume(name)
            if late:
                await joined_late.wait()
            answer = await reader.subscribe("room", offset=0 if late else None)
            assert answer["type"] == "subscribed"
            offsets = got[name] = []
            while not offsets or offsets[-1] < total:
                frame = await reader.until(lambda f: f["type"] == "event", within=120)
                offsets.append(frame["offset"])
                if slow:
                    await trio.sleep(rng.uniform(0, 0.02))

        async def publish(node: int) -> None:
            writer = link(nodes[node], nurseries[node], f"writer-{node}")
            await writer.resume(f"writer-{node}")
            for k, size in enumerate(batches[node]):
                if node == 0 and k == len(batches[node]) // 2:
                    joined_late.set()  # midway through the first publisher's batches
                events = [
                    writer.event(payload={"pad": "x" * rng.randint(10, 300)}) for _ in range(size)
                ]
                await writer.send(*events)
                await trio.sleep(rng.uniform(0, 0.01))  # pacing: interleaves the publishers
            await writer.ping()

        with trio.fail_after(300):
            async with trio.open_nursery() as readers:  # done when each read up to `total`
                for i in range(6):
                    readers.start_soon(
                        functools.partial(read, f"reader-{i}", i % 3, late=i >= 4, slow=i % 2 == 1)
                    )
                await trio.testing.wait_all_tasks_blocked()
                async with trio.open_nursery() as publishers:
                    for node in range(3):
                        publishers.start_soon(publish, node)
    assert [e.offset for e in await store.read("room", 0, total + 1)] == list(range(1, total + 1))
    for name, offsets in sorted(got.items()):
        assert offsets == list(range(1, total + 1)), name


async def test_a_store_without_the_capability_runs_one_node_as_before() -> None:
    """No notices, no fence, no lease: a resume writes nothing (the row's generation stays 0),
    and the store holds no lease (presence entries name the node all the same)."""
    store = MemoryStore()  # not shared
    server = RealtimeServer(store, AllowAll())
    assert server.shared is None
    async with running(server) as on_server:
        with trio.fail_after(10):
            client = link(server, on_server, "c1")
            await client.resume("alice")
            assert (await store.load(clients=("c1",))).clients == {}  # the resume wrote nothing
            await client.publish(client.event(payload=1))
            await client.send(presence("room"))
            await client.ping()
        assert (await store.load(clients=("c1",))).clients["c1"] == ClientRow("alice", 1, 0)
        (entry,) = await store.presence("room")
        assert entry.node == server.node  # recorded, unused on one node
        assert await store.renew_lease("probe", 0.0) == {"probe": 0.0}  # no node took a lease
        on_server.cancel_scope.cancel()


async def test_another_user_resuming_an_unbound_client_id_does_not_fence_out_the_first() -> None:
    """Xavier resumes c1 (never used) on A; Yvonne resumes c1 on B before Xavier stored
    anything: the fence bound c1 to Xavier, so Yvonne is refused (4003, client_id taken) and
    Xavier's link stays: his event is acked."""
    store = MemoryStore(shared=True)
    a = RealtimeServer(store, AllowAll())
    b = RealtimeServer(store, AllowAll())
    async with running(a) as on_a, running(b) as on_b:
        with trio.fail_after(10):
            x = link(a, on_a, "c1")
            await x.resume("xavier")
            y = link(b, on_b, "c1")
            await y.resume("yvonne")
            while await y.next() is not None:
                pass
            assert y.close_code == 4003
            ack = await x.publish(x.event(payload="hello"))
            assert ack["ack_seq"] == 1
        assert [e.payload for e in await store.read("room", 0, 10)] == ["hello"]
        assert (await store.load(clients=("c1",))).clients["c1"].owner == "xavier"
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


def _named(server: RealtimeServer, node: str) -> RealtimeServer:
    """``server`` with the node id ``node`` (ids decide which live node reaps the dead)."""
    server.node = node
    for handler in server.handlers:
        if hasattr(handler, "_node"):
            handler._node = node
    return server


async def test_a_dead_nodes_user_leaves_once_when_the_reaping_node_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B schedules the leave of a dead node's user; a node with a smaller id joins (a rolling
    deploy) and schedules it too: both drop the entry when its time comes, one leave only."""
    store = MemoryStore(shared=True)
    config = ServerConfig(presence_timeout=10, node_lease=15, heartbeat_timeout=600)

    def make(name: str) -> RealtimeServer:
        server = RealtimeServer(store, AllowAll(), config, wall_clock=trio.current_time)
        return _named(server, name)

    dead, b, newcomer = make("z-dead"), make("m-b"), make("a-new")
    async with running(b) as on_b:
        async with running(dead) as on_dead:
            bob = link(b, on_b, "bob-1")
            await bob.resume("bob")
            await bob.subscribe("room")
            alice = link(dead, on_dead, "alice-1")
            await alice.resume("alice")
            await alice.send(presence("room"))
            await bob.until(lambda f: f.get("kind") == "presence_diff")
            on_dead.cancel_scope.cancel()
        lease_end = (await store.renew_lease("probe", 0.0))[dead.node]
        await store.drop_lease("probe")
        await trio.sleep_until(lease_end + 6)  # B has scheduled alice's leave
        async with running(newcomer):
            with trio.move_on_after(60):
                await bob.until(lambda f: False, within=math.inf)
        assert await store.presence("room") == []
        assert [sorted(f["leaves"]) for f in bob.frames if f.get("leaves")] == [["alice"]]
        on_b.cancel_scope.cancel()


async def test_a_node_whose_users_were_reaped_puts_them_back_when_it_renews(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A's lease renewals stall past its lease and the grace period (the store unreachable from
    A, A alive): B reaps Alice, a leave. A renews: Alice (still connected to A) is put back
    from what A holds, and joins again."""
    store = StalledLeaseStore()
    config = ServerConfig(presence_timeout=10, node_lease=15, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config, wall_clock=trio.current_time)
    b = RealtimeServer(store, AllowAll(), config, wall_clock=trio.current_time)
    async with running(b) as on_b, running(a) as on_a:
        bob = link(b, on_b, "bob-1")
        await bob.resume("bob")
        await bob.subscribe("room")
        alice = link(a, on_a, "alice-1")
        await alice.resume("alice")
        await alice.send(presence("room", metadata={"mood": "fine"}))
        await bob.until(lambda f: f.get("kind") == "presence_diff")
        store.stall = a.node
        lease_end = (await store.renew_lease("probe", 0.0))[a.node]
        await store.drop_lease("probe")
        await trio.sleep_until(lease_end + config.presence_timeout + 10)
        assert await store.presence("room") == []  # reaped
        await bob.until(lambda f: "alice" in f.get("leaves", {}), within=1)  # already sent
        store.resume.set()  # A renews (its first renewal, late, writes a lease already over)
        joined = await bob.until(lambda f: "alice" in f.get("joins", {}), within=60)
        assert joined["joins"]["alice"]["metadata"] == {"mood": "fine"}
        with trio.move_on_after(4 * config.node_lease):  # and she stays
            await bob.until(lambda f: False, within=math.inf)
        (entry,) = await store.presence("room")
        assert (entry.user, entry.node, entry.leave_at) == ("alice", a.node, None)
        about_alice = [
            f for f in bob.frames if "alice" in {**f.get("joins", {}), **f.get("leaves", {})}
        ]
        assert "alice" in about_alice[-1].get("joins", {})
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


def lose_data(store: MemoryStore) -> None:
    """What a Redis FLUSHALL (or a restart without AOF) does to a shared store: its rows are
    gone, and channels start their logs again under a new epoch."""
    store._logs.clear()
    store._clients.clear()
    store._keys.clear()
    store.epoch = new_epoch()


async def closed(client: RawClient) -> int | None:
    while await client.next() is not None:
        pass
    return client.close_code


@pytest.mark.parametrize("new_events", [2, 5])
@pytest.mark.parametrize("writer_on", ["other node", "same node"])
async def test_after_the_store_lost_its_data_subscribers_resume_and_get_the_new_log(
    autojump_clock: trio.testing.MockClock, writer_on: str, new_events: int
) -> None:
    """The shared store loses its data: the channel's log starts again (offsets 1.. under a new
    epoch). A node's subscribers, fed up to 3 of the lost log, are closed 1001 once new events
    are stored (within the poll interval, or at once when the write is the node's own), whether
    the new head is below 3 or past it (then only the epoch tells); they resume (recovered:
    false, the new epoch) and get the new log live from there."""
    store = MemoryStore(shared=True)
    config = ServerConfig(node_poll_interval=1.0, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config)
    b = RealtimeServer(store, AllowAll(), config)
    writes_through = a if writer_on == "other node" else b
    async with running(a) as on_a, running(b) as on_b:
        on_writer = on_a if writes_through is a else on_b
        reader = link(b, on_b, "reader")
        await reader.resume("reader")
        await reader.subscribe("room")
        writer = link(writes_through, on_writer, "writer")
        await writer.resume("writer")
        await writer.publish(*(writer.event(payload=n) for n in (1, 2, 3)))
        await reader.until(lambda f: f.get("offset") == 3)
        old_epoch = reader.frames[-1]["epoch"]
        lose_data(store)
        again = link(writes_through, on_writer, "writer-2")
        await again.resume("writer")
        await again.publish(*(again.event(payload=n) for n in range(new_events)))
        with trio.fail_after(config.node_poll_interval + 0.5):
            assert await closed(reader) == 1001
        reader = link(b, on_b, "reader")
        answer = await reader.resume("reader", channels={"room": {"offset": 3, "epoch": old_epoch}})
        assert answer["channels"]["room"] == {
            "epoch": store.epoch,
            "offset": new_events,
            "recovered": False,
        }
        await again.publish(again.event(payload="c"))
        event = await reader.until(lambda f: f.get("type") == "event", within=2)
        assert (event["offset"], event["epoch"], event["payload"]) == (
            new_events + 1,
            store.epoch,
            "c",
        )
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


async def test_presence_changes_reach_other_nodes_within_the_poll_interval_when_notices_are_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every notice is lost (a pub/sub that drops them without failing): Alice's join on A and
    her going offline reach Bob on B anyway, as full presence states, each within the poll
    interval of the change."""
    store = LosesNotices()
    config = ServerConfig(node_poll_interval=1.0, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config)
    b = RealtimeServer(store, AllowAll(), config)
    async with running(a) as on_a, running(b) as on_b:
        bob = link(b, on_b, "bob-1")
        await bob.resume("bob")
        await bob.subscribe("room")
        await bob.until(lambda f: f.get("kind") == "presence_state")
        alice = link(a, on_a, "alice-1")
        await alice.resume("alice")
        await alice.send(presence("room", metadata={"mood": "fine"}))
        state = await bob.until(
            lambda f: "alice" in f.get("members", {}), within=config.node_poll_interval + 0.1
        )
        assert state["members"]["alice"]["metadata"] == {"mood": "fine"}
        await alice.send(presence("room", status="offline"))
        await bob.until(
            lambda f: f.get("kind") == "presence_state" and f["members"] == {},
            within=config.node_poll_interval + 0.1,
        )
        with trio.move_on_after(10 * config.node_poll_interval):  # nothing changes: nothing sent
            await bob.until(lambda f: False, within=math.inf)
        assert [f.get("kind") for f in bob.frames].count("presence_state") == 3
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


async def test_presence_diffs_that_reach_other_nodes_are_not_sent_again_as_states(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Notices arrive: Alice's join and her status change on A reach Bob on B as diffs, and the
    re-sync (every poll interval) sends him nothing more."""
    store = MemoryStore(shared=True)
    config = ServerConfig(node_poll_interval=1.0, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config)
    b = RealtimeServer(store, AllowAll(), config)
    async with running(a) as on_a, running(b) as on_b:
        bob = link(b, on_b, "bob-1")
        await bob.resume("bob")
        await bob.subscribe("room")
        alice = link(a, on_a, "alice-1")
        await alice.resume("alice")
        await alice.send(presence("room", metadata={"mood": "fine"}))
        await bob.until(lambda f: "alice" in f.get("joins", {}))
        await alice.send(presence("room", metadata={"mood": "great"}, status="away"))
        await bob.until(lambda f: f.get("joins", {}).get("alice", {}).get("status") == "away")
        with trio.move_on_after(10 * config.node_poll_interval):
            await bob.until(lambda f: False, within=math.inf)
        assert [f.get("kind") for f in bob.frames if f["type"] == "meta"] == [
            "presence_state",  # on subscribing
            "presence_diff",
            "presence_diff",
        ]
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


class GatedReads(LosesNotices):
    """Loses notices; once ``hold`` is set, reads wait for ``gate`` (``entered``: one does)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.gate = trio.Event()
        self.entered = trio.Event()

    async def read(self, channel: str, after: int, limit: int) -> list[Any]:
        if self.hold:
            self.entered.set()
            await self.gate.wait()
        return await super().read(channel, after, limit)


async def test_a_replay_that_finds_another_log_ends_the_connection_to_resume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A subscriber replaying 2..3 from the store when the store loses its data, and another
    node stores 5 events in the new log: its replay reads events of another epoch after offset
    1; it is closed 1001 at once (to resume), and none of them is sent to it."""
    store = GatedReads()
    config = ServerConfig(node_poll_interval=1.0, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config)
    b = RealtimeServer(store, AllowAll(), config)
    async with running(a) as on_a, running(b) as on_b:
        writer = link(a, on_a, "writer")
        await writer.resume("writer")
        await writer.publish(*(writer.event(payload=n) for n in (1, 2, 3)))
        store.hold = True
        reader = link(b, on_b, "reader")
        await reader.resume("reader")
        subscribed = await reader.subscribe("room", offset=1)
        await store.entered.wait()  # its replay reads the store
        lose_data(store)
        again = link(a, on_a, "writer-2")
        await again.resume("writer")
        store.hold = False
        await again.publish(*(again.event(payload=n) for n in range(5)))
        store.gate.set()
        with trio.fail_after(config.node_poll_interval / 2):  # before any poll could see it
            assert await closed(reader) == 1001
        assert {f["epoch"] for f in reader.frames if f["type"] == "event"} <= {subscribed["epoch"]}
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


class DeafStore(MemoryStore):
    """Shared; while ``deaf``, notices are lost."""

    def __init__(self) -> None:
        super().__init__(shared=True)
        self.deaf = False

    async def publish(self, notices: Sequence[Notice]) -> None:
        if self.deaf:
            await trio.lowlevel.checkpoint()
            return
        await super().publish(notices)

    def cut(self) -> None:
        """End every node's watch (a pub/sub connection lost): they watch again."""
        for watcher in list(self._watchers):
            watcher.close()
        self._watchers.clear()


async def test_a_node_that_watches_again_re_syncs_presence_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B's watch of the notices ends (a lost pub/sub connection) while Alice joins on A: her
    join's notice is lost. B watches again a second later, and re-syncs presence then, not at
    its next poll (a minute away)."""
    store = DeafStore()
    config = ServerConfig(node_poll_interval=60.0, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config)
    b = RealtimeServer(store, AllowAll(), config)
    async with running(a) as on_a, running(b) as on_b:
        bob = link(b, on_b, "bob-1")
        await bob.resume("bob")
        await bob.subscribe("room")
        await bob.until(lambda f: f.get("kind") == "presence_state")
        alice = link(a, on_a, "alice-1")
        await alice.resume("alice")
        store.deaf = True
        store.cut()
        await alice.send(presence("room"))
        await alice.ping()
        assert [e.user for e in await store.presence("room")] == ["alice"]
        store.deaf = False
        await bob.until(lambda f: "alice" in f.get("members", {}), within=3)
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()


async def test_a_log_that_got_shorter_under_the_same_epoch_makes_subscribers_resume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failover to a replica that lacked the last writes: the channel's log is shorter, under
    the same epoch. The node that fanned out past its new head notices at its next poll and
    closes its subscribers 1001; their resume is not recovered (their offset is past the head)."""
    store = MemoryStore(shared=True)
    config = ServerConfig(node_poll_interval=1.0, heartbeat_timeout=600)
    a = RealtimeServer(store, AllowAll(), config)
    b = RealtimeServer(store, AllowAll(), config)
    async with running(a) as on_a, running(b) as on_b:
        reader = link(b, on_b, "reader")
        await reader.resume("reader")
        await reader.subscribe("room")
        writer = link(a, on_a, "writer")
        await writer.resume("writer")
        await writer.publish(*(writer.event(payload=n) for n in range(5)))
        await reader.until(lambda f: f.get("offset") == 5)
        epoch = reader.frames[-1]["epoch"]
        log = store._logs["room"]  # the replica had only the first two
        log.events, log.stored_at, log.head = log.events[:2], log.stored_at[:2], 2
        with trio.fail_after(config.node_poll_interval + 0.5):
            assert await closed(reader) == 1001
        reader = link(b, on_b, "reader")
        answer = await reader.resume("reader", channels={"room": {"offset": 5, "epoch": epoch}})
        assert answer["channels"]["room"] == {"epoch": epoch, "offset": 2, "recovered": False}
        on_a.cancel_scope.cancel()
        on_b.cancel_scope.cancel()
