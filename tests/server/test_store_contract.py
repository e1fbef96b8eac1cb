"""The store contract, through the public conformance kit (``trio_realtime.testing.check_store``):
the built-in stores pass it; so does a dict-backed store written here with public names only,
which also carries real clients through the server; and stores that break a rule fail it."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Collection
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from trio_realtime import Acked, RealtimeConfig, open_realtime
from trio_realtime.server import (
    ChannelInfo,
    ClientRow,
    MemoryStore,
    Message,
    PresenceEntry,
    Snapshot,
    SqliteStore,
    Store,
    StoreConflict,
    WriteBatch,
)
from trio_realtime.testing import check_store, open_memory_server

from ..helpers import collect

# --- A store written with public names only ----------------------------------------------------


@attrs.define
class DictData:
    """A dict store's rows: kept by the test, so that a new store object on the same data is a
    reopened store."""

    epoch: str = attrs.Factory(lambda: secrets.token_hex(6))
    clients: dict[str, ClientRow] = attrs.Factory(dict)
    heads: dict[str, tuple[str, int]] = attrs.Factory(dict)
    """channel -> (epoch, head)"""
    events: dict[str, dict[int, tuple[float, Message]]] = attrs.Factory(dict)
    """channel -> offset -> (stored at, event), the retained ones"""
    keys: dict[tuple[str, str], float] = attrs.Factory(dict)
    receipts: dict[tuple[str, str], int] = attrs.Factory(dict)
    presence: dict[tuple[str, str, str], PresenceEntry] = attrs.Factory(dict)


class DictStore:
    """The store contract over a few dicts."""

    def __init__(self, data: DictData | None = None) -> None:
        self.data = DictData() if data is None else data

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def _info(self, channel: str) -> ChannelInfo | None:
        if channel not in self.data.heads:
            return None
        epoch, head = self.data.heads[channel]
        return ChannelInfo(epoch, head, min(self.data.events[channel], default=head + 1))

    async def load(
        self,
        *,
        clients: Collection[str] = (),
        channels: Collection[str] = (),
        keys: Collection[tuple[str, str]] = (),
    ) -> Snapshot:
        await trio.lowlevel.checkpoint()
        data = self.data
        infos = {name: self._info(name) for name in channels}
        return Snapshot(
            data.epoch,
            clients={name: data.clients[name] for name in clients if name in data.clients},
            channels={name: info for name, info in infos.items() if info is not None},
            keys={pair: data.keys[pair] for pair in keys if pair in data.keys},
        )

    def check(self, batch: WriteBatch) -> None:
        self.check_appends(batch)
        self.check_clients(batch)

    def check_appends(self, batch: WriteBatch) -> None:
        for append in batch.appends:
            if self.data.heads.get(append.channel, ("", 0))[1] != append.after:
                raise StoreConflict(f"channel {append.channel!r} moved")

    def check_clients(self, batch: WriteBatch) -> None:
        for update in batch.clients:
            if self.data.clients.get(update.client_id) != update.before:
                raise StoreConflict(f"client {update.client_id!r} moved")

    def apply_appends(self, batch: WriteBatch) -> None:
        data = self.data
        for append in batch.appends:
            epoch, head = data.heads.get(append.channel, (append.epoch, 0))
            events = data.events.setdefault(append.channel, {})
            for event in append.events:
                events[event.offset] = (batch.time, event)
                head = event.offset
            data.heads[append.channel] = (epoch, head)
            for offset, (at, _) in list(events.items()):
                if offset < append.keep_from or at < append.drop_before:
                    del events[offset]

    def apply_rest(self, batch: WriteBatch) -> None:
        data = self.data
        for update in batch.clients:
            data.clients[update.client_id] = update.after
        for pair in batch.keys:
            data.keys[pair] = batch.time
        if batch.forget_keys_before is not None:
            cutoff = batch.forget_keys_before
            data.keys = {pair: at for pair, at in data.keys.items() if at >= cutoff}

    async def write(self, batch: WriteBatch) -> None:
        await trio.lowlevel.checkpoint()  # as if waiting for a connection
        # Check every precondition, then apply, with no checkpoint between: one atomic step.
        self.check(batch)
        self.apply_appends(batch)
        self.apply_rest(batch)

    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        await trio.lowlevel.checkpoint()
        info = self._info(channel)
        if info is None:
            return []
        events = self.data.events[channel]
        start = max(after + 1, info.first)
        return [events[offset][1] for offset in range(start, min(info.head, start + limit - 1) + 1)]

    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        await trio.lowlevel.checkpoint()
        if offset <= self.data.receipts.get((channel, user), 0):
            return False
        self.data.receipts[(channel, user)] = offset
        return True

    async def receipts(self, channel: str) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return {user: at for (name, user), at in self.data.receipts.items() if name == channel}

    async def presence(self, channel: str, user: str | None = None) -> list[PresenceEntry]:
        await trio.lowlevel.checkpoint()
        return [
            e
            for e in self.data.presence.values()
            if e.channel == channel and user in (None, e.user)
        ]

    async def presence_channels(self, user: str) -> set[str]:
        await trio.lowlevel.checkpoint()
        return {e.channel for e in self.data.presence.values() if e.user == user}

    async def presence_of(self, connection: str) -> list[PresenceEntry]:
        await trio.lowlevel.checkpoint()
        return [e for e in self.data.presence.values() if e.connection == connection]

    async def put_presence(self, entry: PresenceEntry) -> None:
        await trio.lowlevel.checkpoint()
        self.data.presence[entry.channel, entry.user, entry.connection] = entry

    async def drop_presence(self, channel: str, user: str, connection: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self.data.presence.pop((channel, user, connection), None) is not None


def _typed(make: Callable[[], Store]) -> Callable[[], Store]:
    """(The dict stores are checked as ``Store``s by mypy through this.)"""
    return make


# --- The stores pass -----------------------------------------------------------------------


async def test_the_memory_store_keeps_the_contract() -> None:
    await check_store(MemoryStore, persistent=False)


async def test_a_shared_memory_store_keeps_the_contract() -> None:
    await check_store(lambda: MemoryStore(shared=True), persistent=False)


async def test_the_sqlite_store_keeps_the_contract(tmp_path: Path) -> None:
    await check_store(lambda: SqliteStore(tmp_path / "s.db"), persistent=True)


async def test_a_dict_store_of_public_names_keeps_the_contract() -> None:
    await check_store(_typed(DictStore), persistent=False)


async def test_a_dict_store_on_kept_data_keeps_the_contract_across_a_reopen() -> None:
    data = DictData()
    await check_store(_typed(lambda: DictStore(data)), persistent=True)


async def test_the_kit_runs_again_on_the_same_data() -> None:
    data = DictData()
    await check_store(_typed(lambda: DictStore(data)), persistent=True)
    await check_store(_typed(lambda: DictStore(data)), persistent=True)


async def test_a_dict_store_carries_clients_through_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = DictStore()
    config = RealtimeConfig(durability="memory", network_monitor=False)
    async with open_memory_server(store=store) as server:
        connector = server.connector()
        async with (
            open_realtime(server.url, token="bob", connector=connector, config=config) as bob,
            open_realtime(server.url, token="alice", connector=connector, config=config) as alice,
        ):
            await bob.subscribe("room")
            receipts = [await alice.send("room", "said", {"n": n, "text": "é✓"}) for n in range(3)]
            assert [await receipt.wait() for receipt in receipts] == [
                Acked(seq=1),
                Acked(seq=2),
                Acked(seq=3),
            ]
            messages = await collect(bob, "room", 3)
    assert [(m.offset, m.sender, m.event, m.payload) for m in messages] == [
        (n + 1, "alice", "said", {"n": n, "text": "é✓"}) for n in range(3)
    ]
    assert {m.epoch for m in messages} == {store.data.epoch}
    # The rows are in the dict store: the log, and alice's client row (bound, watermark 3).
    assert [e.payload["n"] for e in await store.read("room", 0, 10)] == [0, 1, 2]
    assert [row for row in store.data.clients.values() if row.owner == "alice"] == [
        ClientRow("alice", 3)
    ]


# --- Stores that break a rule fail ---------------------------------------------------------


class AppliesAppendsBeforeCheckingClients(DictStore):
    async def write(self, batch: WriteBatch) -> None:
        await trio.lowlevel.checkpoint()
        self.check_appends(batch)
        self.apply_appends(batch)
        self.check_clients(batch)
        self.apply_rest(batch)


class SkipsAnEventWhenPaging(DictStore):
    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        events = await super().read(channel, after, limit + 1)
        return events[1:] if after > 0 and len(events) > 2 else events[:limit]


class CapsPagesAt1000(DictStore):
    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        return await super().read(channel, after, min(limit, 1000))


class YieldsBetweenCheckAndApply(DictStore):
    async def write(self, batch: WriteBatch) -> None:
        self.check(batch)
        await trio.lowlevel.checkpoint()
        self.apply_appends(batch)
        self.apply_rest(batch)


class ForgetsAChannelWithNoEventLeft(DictStore):
    def apply_appends(self, batch: WriteBatch) -> None:
        super().apply_appends(batch)
        for append in batch.appends:
            if not self.data.events[append.channel]:
                del self.data.heads[append.channel]


class IgnoresDropBefore(DictStore):
    def apply_appends(self, batch: WriteBatch) -> None:
        super().apply_appends(
            attrs.evolve(
                batch,
                appends=tuple(attrs.evolve(append, drop_before=0.0) for append in batch.appends),
            )
        )


class KeepsAKeysFirstTime(DictStore):
    def apply_rest(self, batch: WriteBatch) -> None:
        kept = {pair: self.data.keys[pair] for pair in batch.keys if pair in self.data.keys}
        super().apply_rest(batch)
        self.data.keys.update({pair: at for pair, at in kept.items() if pair in self.data.keys})


class MovesReceiptsBack(DictStore):
    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        moved = await super().mark_read(channel, user, offset)
        self.data.receipts[(channel, user)] = offset
        return moved


class DropsGenerations(DictStore):
    """Keeps a client row as it was before the fencing generation existed."""

    def apply_rest(self, batch: WriteBatch) -> None:
        super().apply_rest(batch)
        for update in batch.clients:
            row = self.data.clients[update.client_id]
            self.data.clients[update.client_id] = ClientRow(row.owner, row.ack_seq)


class LosesKeysOnReopen(DictStore):
    async def open(self) -> None:
        await super().open()
        self.data.keys.clear()


class ChangesEpochOnReopen(DictStore):
    async def open(self) -> None:
        await super().open()
        self.data.epoch = secrets.token_hex(6)


@pytest.mark.parametrize(
    ("broken", "persistent", "rule"),
    [
        (AppliesAppendsBeforeCheckingClients, False, "applies nothing of its batch"),
        (SkipsAnEventWhenPaging, False, "returns the retained events"),
        (CapsPagesAt1000, False, "exactly `limit`"),
        (YieldsBetweenCheckAndApply, False, "exactly one applies"),
        (ForgetsAChannelWithNoEventLeft, False, "every event is dropped keeps its row"),
        (IgnoresDropBefore, False, "drop_before"),
        (KeepsAKeysFirstTime, False, "replacing an older row"),
        (MovesReceiptsBack, False, "only forwards"),
        (DropsGenerations, False, "writes its `after` row"),
        (LosesKeysOnReopen, True, "persistent store keeps everything"),
        (ChangesEpochOnReopen, True, "Snapshot.epoch"),
    ],
)
async def test_a_store_that_breaks_a_rule_fails_the_kit_naming_the_rule(
    broken: type[DictStore], persistent: bool, rule: str
) -> None:
    data = DictData()
    with pytest.raises(AssertionError, match=re.escape(rule)):
        await check_store(_typed(lambda: broken(data)), persistent=persistent)
