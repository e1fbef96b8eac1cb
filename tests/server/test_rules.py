"""The storage rules as a pure function of the rows a store had (no store, no I/O), and the
commit loop that plans again when another writer moved the rows."""

from __future__ import annotations

import trio

from trio_realtime.server import ChannelInfo, ClientRow, MemoryStore, Snapshot, WriteBatch
from trio_realtime.server._rules import FENCED, Retention, commit, plan_commit
from trio_realtime.server._store import NewEvent

RETENTION = Retention(count=3, age=100.0, dedup_window=10.0)


def event(
    seq: int, *, sender: str = "alice", key: str | None = None, channel: str = "ch"
) -> NewEvent:
    return NewEvent(channel, "e", seq, seq, sender, key or f"c1:{seq}", seq)


def test_offsets_follow_the_head_and_a_new_channel_starts_under_the_store_epoch() -> None:
    snapshot = Snapshot("store-epoch", channels={"old": ChannelInfo("e-old", 7, 5)})
    plan = plan_commit(
        snapshot,
        [("c1", "alice", 2, [event(1, channel="old"), event(2, channel="new")])],
        now=1000.0,
        retention=RETENTION,
    )
    (stored,) = plan.results
    assert stored is not None
    assert [(e.channel, e.offset, e.epoch) for e in stored if e] == [
        ("old", 8, "e-old"),
        ("new", 1, "store-epoch"),
    ]
    old, new = plan.batch.appends
    assert (old.after, old.keep_from, old.drop_before) == (7, 6, 900.0)  # newest 3: 6, 7, 8
    assert (new.after, new.keep_from) == (0, 1)
    (update,) = plan.batch.clients
    assert (update.before, update.after) == (None, ClientRow("alice", 2))


def test_seqs_at_or_below_the_watermark_are_duplicates_and_it_never_moves_back() -> None:
    snapshot = Snapshot("e", clients={"c1": ClientRow("alice", 5)})
    plan = plan_commit(
        snapshot, [("c1", "alice", 6, [event(5), event(6)])], now=0.0, retention=RETENTION
    )
    (stored,) = plan.results
    assert stored is not None
    assert [e.offset if e else None for e in stored] == [None, 1]
    plan = plan_commit(snapshot, [("c1", "alice", 3, [])], now=0.0, retention=RETENTION)
    assert plan.batch.clients == ()  # nothing changes: 3 is below 5


def test_caller_keys_are_per_user_within_the_window_and_within_one_batch() -> None:
    snapshot = Snapshot("e", keys={("alice", "k1"): 995.0, ("alice", "k-old"): 980.0})
    requests = [
        (
            "c1",
            "alice",
            4,
            [event(1, key="k1"), event(2, key="k-old"), event(3, key="k2"), event(4, key="k2")],
        ),
        ("c2", "bob", 1, [NewEvent("ch", "e", 0, 0, "bob", "k1", 1)]),
    ]
    plan = plan_commit(snapshot, requests, now=1000.0, retention=RETENTION, forget_keys=True)
    mine, bobs = plan.results
    assert mine is not None
    assert bobs is not None
    # k1 within the window: a duplicate; k-old outside it: stored; k2 twice in one batch: once.
    assert [e is not None for e in mine] == [False, True, True, False]
    assert bobs[0] is not None  # bob's k1 is his own
    assert sorted(plan.batch.keys) == [("alice", "k-old"), ("alice", "k2"), ("bob", "k1")]
    assert plan.batch.forget_keys_before == 990.0


def test_a_client_id_of_another_user_is_refused_whole() -> None:
    snapshot = Snapshot("e", clients={"c1": ClientRow("alice", 1)})
    plan = plan_commit(
        snapshot,
        [("c1", "mallory", 2, [event(2, sender="mallory")]), ("c1", "alice", 3, [event(3)])],
        now=0.0,
        retention=RETENTION,
    )
    refused, alices = plan.results
    assert refused is None
    assert alices is not None
    assert [e.offset for e in alices if e] == [1]
    (update,) = plan.batch.clients
    assert update.after == ClientRow("alice", 3)


def test_a_request_of_another_user_without_events_moves_no_watermark() -> None:
    """The binding is checked against the connection's user, not the events' senders: a request
    of mallory's that holds no event (all refused) still cannot raise alice's watermark."""
    snapshot = Snapshot("e", clients={"c1": ClientRow("alice", 3)})
    plan = plan_commit(snapshot, [("c1", "mallory", 9, [])], now=0.0, retention=RETENTION)
    assert plan.results == [None]
    assert plan.batch.clients == ()


def test_a_request_of_an_older_generation_is_fenced_and_writes_nothing() -> None:
    """The client resumed again since (generation 3): a request of a connection that resumed
    under generation 2 stores nothing and leaves the row alone; one of generation 3 stores,
    with the row as precondition, generation kept."""
    snapshot = Snapshot("e", clients={"c1": ClientRow("alice", 1, 3)})
    plan = plan_commit(
        snapshot, [("c1", "alice", 2, [event(2)])], now=0.0, retention=RETENTION, generations=[2]
    )
    assert plan.results == [FENCED]
    assert (plan.batch.appends, plan.batch.clients) == ((), ())
    plan = plan_commit(
        snapshot, [("c1", "alice", 2, [event(2)])], now=0.0, retention=RETENTION, generations=[3]
    )
    (update,) = plan.batch.clients
    assert (update.before, update.after) == (ClientRow("alice", 1, 3), ClientRow("alice", 2, 3))
    # Without a generation (one node): never fenced.
    plan = plan_commit(snapshot, [("c1", "alice", 2, [event(2)])], now=0.0, retention=RETENTION)
    assert plan.results != [FENCED]


def test_a_fenced_request_that_stores_without_moving_its_watermark_still_checks_its_row() -> None:
    """An event stored under a watermark that does not move (the request's ack_seq is behind):
    the client row is still a precondition of the write, so a resume meanwhile conflicts."""
    snapshot = Snapshot("e", clients={"c1": ClientRow("alice", 1, 3)})
    plan = plan_commit(
        snapshot, [("c1", "alice", 1, [event(2)])], now=0.0, retention=RETENTION, generations=[3]
    )
    (update,) = plan.batch.clients
    assert update.before == update.after == ClientRow("alice", 1, 3)


class RacingStore(MemoryStore):
    """Another writer appends to the channel between this commit's load and its write, once."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[WriteBatch] = []
        self.raced = False

    async def write(self, batch: WriteBatch) -> None:
        self.writes.append(batch)
        if not self.raced:
            self.raced = True
            await commit(
                self,
                [("other", "bob", 1, [event(1, sender="bob", key="other:1")])],
                retention=RETENTION,
            )
        await super().write(batch)


async def test_a_conflict_plans_again_from_the_rows_as_they_are() -> None:
    store = RacingStore()
    (stored,) = await commit(store, [("c1", "alice", 1, [event(1)])], retention=RETENTION)
    await trio.lowlevel.checkpoint()
    assert stored is not None
    assert [e.offset for e in stored if e] == [2]  # planned again after the other writer's 1
    assert [e.payload for e in await store.read("ch", 0, 10)] == [1, 1]
    assert len(store.writes) == 3  # the first try (conflict), the other writer's, the second try
