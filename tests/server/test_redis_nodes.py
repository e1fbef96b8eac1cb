"""Several ``trio-realtime serve`` processes on one Redis (issue 22), on one instance and on a
3-master cluster: a client resumes on another node after its node was SIGKILLed (nothing lost,
nothing stored twice, caller keys deduplicated across nodes, subscribers recovered); presence
is shared, and a dead node's users leave after its lease plus the grace period, not before;
Redis restarted from its AOF under running nodes loses no acked event.

The nodes are real processes (tests/server/_nodes.py); a client reaches the node it is "on"
through a FaultProxy standing in for a load balancer: its target is read per connection, so
pointing it at another node sends the reconnects there."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import trio

from trio_realtime import Acked, ConnectionState, Message, RealtimeConfig, Receipt, open_realtime
from trio_realtime.server._redis import RedisStore
from trio_realtime.testing import open_fault_proxy

from ..helpers import Watched, collect
from ..redis_servers import RedisCluster, RedisServer
from ._nodes import Nodes, open_nodes

#: Clients that reconnect at once (no network monitor: loopback).
QUICK = RealtimeConfig(
    durability="memory", initial_retry_delay=0.01, max_retry_delay=0.2, network_monitor=False
)
#: A durable sender: its events are journaled (the default durability) before send() returns.
DURABLE = RealtimeConfig(initial_retry_delay=0.01, max_retry_delay=0.2, network_monitor=False)


@pytest.fixture(params=["redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A store URL under a prefix of its own, on the single Redis or on the cluster."""
    server: RedisServer | RedisCluster = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster"
    )
    joiner = "&" if "?" in server.url else "?"
    return f"{server.url}{joiner}prefix=nodes-{secrets.token_hex(4)}"


async def stored(url: str, channel: str, limit: int) -> list[Message]:
    """What the store at ``url`` holds of ``channel``, read by a store object of this process."""
    store = RedisStore(url)
    await store.open()
    try:
        return await store.read(channel, 0, limit)
    finally:
        await store.aclose()


def proxied(port: int) -> str:
    return f"ws://127.0.0.1:{port}/realtime"


@pytest.mark.parametrize("count", [2, 3])
async def test_a_client_resumes_on_another_node_process_after_a_sigkill(
    store_url: str, count: int, tmp_path: Path
) -> None:
    """Alice (durable, a journal) sends N events through the balancer to node A, with a caller
    key each; Bob (and Carol, with three nodes) read on the other nodes, Dave reads through the
    balancer on A; Erin sends on the last node meanwhile (their commits race in Redis). A is
    SIGKILLed mid-stream, the balancer turns to B: Alice and Dave resume there. Every receipt
    is Acked, seqs 1..N; the store holds every event once, offsets 1..N+M, each sender's in
    order; every reader gets exactly that, without a Gap (Dave's resume on B was recovered). Then a
    reinstalled Alice (a new journal) sends some events again under the same keys through B:
    each Acked as a duplicate, nothing stored twice (the keys are shared by the nodes)."""
    total = 120  # Alice's; Erin sends one for every second of hers
    async with (
        open_nodes(tmp_path, store_url, count) as nodes,
        open_fault_proxy(nodes[0].port) as balancer,
        trio.open_nursery() as nursery,
    ):
        readers = []
        for i, node in enumerate(nodes.nodes[1:], 1):
            reader = await nursery.start(client, node.url, nodes, f"reader-{i}")
            await reader.subscribe("room")
            readers.append(reader)
        dave = await nursery.start(client, proxied(balancer.port), nodes, "dave")
        await dave.subscribe("room")
        async with (
            open_realtime(
                proxied(balancer.port),
                config=DURABLE,
                journal_dir=tmp_path / "alice",
                token=nodes.token("alice"),
            ) as alice,
            open_realtime(
                nodes[count - 1].url,
                config=DURABLE,
                journal_dir=tmp_path / "erin",
                token=nodes.token("erin"),
            ) as erin,
        ):
            receipts = []
            erins = []
            reconnects_on_a = 0
            for n in range(total):
                receipts.append(await alice.send("room", "n", n, idempotency_key=f"key-{n}"))
                if n % 2 == 0:
                    erins.append(await erin.send("room", "e", ["erin", n // 2]))
                if n == total // 3:
                    with trio.fail_after(10):  # the stream flows through A
                        await receipts[-1].wait()
                if n == total // 2:
                    # Mid-stream: what Alice sent since may be anywhere (sent, stored, acked).
                    reconnects_on_a = alice.metrics.total_reconnects
                    await nodes[0].kill()
                    balancer.target = ("127.0.0.1", nodes[1].port)
            with trio.fail_after(20):
                outcomes = [await r.wait() for r in receipts]
                assert [await r.wait() for r in erins] == [
                    Acked(seq=n) for n in range(1, len(erins) + 1)
                ]
            # All Acked. None as a duplicate: what A stored before it died is resolved by the
            # resume's ack_seq on B, never sent again (a resent caller key is, below).
            assert outcomes == [Acked(seq=n) for n in range(1, total + 1)], nodes.logs()
            assert reconnects_on_a == 0
            assert alice.metrics.total_reconnects >= 1  # resumed on B
        everything = total + len(erins)
        got = [await collect(reader, "room", everything) for reader in [*readers, dave]]
        assert dave.metrics.total_reconnects >= 1
        # Reinstalled: a new client_id, the same user and caller keys, through B.
        async with open_realtime(
            proxied(balancer.port),
            config=QUICK,
            journal_dir=tmp_path / "alice-again",
            token=nodes.token("alice"),
        ) as again:
            resent = [0, 1, total // 2 - 1, total // 2, total // 2 + 1, total - 1]
            with trio.fail_after(20):
                verdicts = [
                    await (await again.send("room", "n", n, idempotency_key=f"key-{n}")).wait()
                    for n in resent
                ]
            assert verdicts == [Acked(seq=s, duplicate=True) for s in range(1, len(resent) + 1)]
        nursery.cancel_scope.cancel()
    events = await stored(store_url, "room", everything + 10)
    assert [e.offset for e in events] == list(range(1, everything + 1))
    assert [e.payload for e in events if e.sender == "alice"] == list(range(total))
    assert [e.payload for e in events if e.sender == "erin"] == [
        ["erin", k] for k in range(len(erins))
    ]
    for messages in got:  # collect() fails on a Gap: Dave's resume on B was recovered
        assert [(m.offset, m.payload) for m in messages] == [(e.offset, e.payload) for e in events]


async def client(
    url: str,
    nodes: Nodes,
    user: str,
    *,
    task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A client for the test's nursery (cancelled with it)."""
    async with open_realtime(url, config=QUICK, token=nodes.token(user)) as conn:
        task_status.started(conn)
        await trio.sleep_forever()


#: Short timings for the presence test: the nodes' lease and grace period (seconds). The grace
#: period is as long as the lease, so that a leave that skipped it (at most 4/3 of the lease
#: after the kill) always falls before the earliest legitimate one (2/3 lease + grace).
LEASE = 3.0
GRACE = 3.0


async def test_presence_is_shared_and_a_killed_nodes_users_leave_after_lease_and_grace(
    store_url: str, tmp_path: Path
) -> None:
    """Alice is present through A: Bob on B sees her join, Carol (subscribing on B later) sees
    her in the state. A is SIGKILLed: Bob and Carol see her leave once, no sooner than A's
    lease (renewed every third of it) plus the grace period after the kill can have run out,
    and no later than one more look of B's at the leases after that (plus a margin)."""
    options = ("--node-lease", str(LEASE), "--presence-timeout", str(GRACE))
    options += ("--node-poll-interval", "0.5")
    async with (
        open_nodes(tmp_path, store_url, 2, *options) as nodes,
        trio.open_nursery() as nursery,
    ):
        a, b = nodes.nodes
        bob = await nursery.start(client, b.url, nodes, "bob")
        await bob.subscribe("room")
        changes = bob.presence.changes("room")
        async with open_realtime(a.url, config=QUICK, token=nodes.token("alice")) as alice:
            await alice.presence.update("online", channel="room", metadata={"on": "a"})
            with trio.fail_after(10):
                async for change in changes:
                    if "alice" in change.joins:
                        break
            assert change.joins["alice"].metadata == {"on": "a"}
            carol = await nursery.start(client, b.url, nodes, "carol")
            await carol.subscribe("room")
            carol_changes = carol.presence.changes("room")
            with trio.fail_after(10):
                async for change in carol_changes:
                    if change.joins:  # the state
                        assert set(change.joins) == {"alice"}
                        break
            killed = time.monotonic()
            await a.kill()
        earliest = killed + LEASE * 2 / 3 + GRACE
        latest = killed + LEASE * 4 / 3 + GRACE
        with trio.move_on_at(trio.current_time() + latest + 5 - time.monotonic()) as waiting:
            async for change in changes:
                assert not change.joins, change
                if change.leaves:
                    left = time.monotonic()
                    break
        if waiting.cancelled_caught:
            pytest.fail(f"Alice was still present {time.monotonic() - killed:.1f} s after the kill")
        assert set(change.leaves) == {"alice"}
        # Generous on the late side (a loaded machine), exact on the early side: a leave
        # before A's lease could have run out would be a bug (0.2 s for the lease's round trip).
        assert left >= earliest - 0.2, f"left {left - killed:.2f} s after the kill"
        assert left <= latest + 3, f"left {left - killed:.2f} s after the kill"
        assert bob.presence.members("room") == {}
        with trio.fail_after(5):  # Carol sees her leave too
            async for change in carol_changes:
                if change.leaves:
                    assert set(change.leaves) == {"alice"}
                    break
        assert carol.presence.members("room") == {}
        nursery.cancel_scope.cancel()


async def test_redis_restarted_under_running_nodes_loses_no_acked_event(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two nodes on the single Redis (AOF, appendfsync always); Alice sends continuously
    through A while Bob reads on B. Redis is killed mid-stream (a crash: only what it fsynced
    survives) and started again from its AOF while she goes on sending: her link fails (the
    commit fails, the node closes it) and she reconnects. In the end every receipt is Acked,
    the store holds each event once and in order, and Bob got them all (offsets 1..N)."""
    url = f"{redis_server.url}?prefix=restart-{secrets.token_hex(4)}"
    async with (
        open_nodes(tmp_path, url, 2, "--node-poll-interval", "0.5") as nodes,
        trio.open_nursery() as nursery,
    ):
        a, b = nodes.nodes
        bob = await nursery.start(client, b.url, nodes, "bob")
        await bob.subscribe("room")
        async with open_realtime(
            a.url, config=DURABLE, journal_dir=tmp_path / "alice", token=nodes.token("alice")
        ) as alice:
            receipts: Watched[Receipt] = Watched()
            stop = trio.Event()
            states = alice.states()

            async def send() -> None:
                while not stop.is_set():
                    receipts.append(await alice.send("room", "n", len(receipts)))
                    await trio.sleep(0.005)  # pacing: about 200 events a second

            async with trio.open_nursery() as sending:
                sending.start_soon(send)
                await receipts.wait_until(lambda: len(receipts) >= 40, within=20)
                first = len(receipts)  # the sender goes on meanwhile
                with trio.fail_after(10):
                    assert await receipts[first - 1].wait() == Acked(seq=first)
                await trio.to_thread.run_sync(lambda: redis_server.stop(kill=True))
                # A commit fails: A closes her link, she reconnects.
                with trio.fail_after(20):
                    async for state in states:
                        if state is ConnectionState.RECONNECTING:
                            break
                down = len(receipts)
                await trio.to_thread.run_sync(redis_server.start)  # loads its AOF
                await receipts.wait_until(lambda: len(receipts) >= down + 40, within=20)
                stop.set()
            total = len(receipts)
            with trio.fail_after(30):
                outcomes = [await r.wait() for r in receipts]
            assert outcomes == [Acked(seq=n) for n in range(1, total + 1)], nodes.logs()
        got = await collect(bob, "room", total, within=30)
        nursery.cancel_scope.cancel()
    events = await stored(url, "room", total + 10)
    assert [(e.offset, e.payload) for e in events] == [(n + 1, n) for n in range(total)]
    assert [(m.offset, m.payload) for m in got] == [(n + 1, n) for n in range(total)]
