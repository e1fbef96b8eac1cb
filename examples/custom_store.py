"""A server store of your own: the store contract over plain dicts, checked with the public
conformance kit, then serving two clients.

Run it: python examples/custom_store.py
"""

from __future__ import annotations

from collections.abc import Collection

import trio

from trio_realtime import Acked, RealtimeConfig, open_realtime
from trio_realtime.server import (
    ChannelInfo,
    ClientRow,
    Message,
    PresenceEntry,
    Snapshot,
    StoreConflict,
    WriteBatch,
)
from trio_realtime.testing import check_store, open_memory_server


class DictStore:
    """Rows in dicts. The server applies the rules; a store keeps rows and writes a batch
    atomically, after checking its preconditions (this one never yields in between)."""

    def __init__(self) -> None:
        self.epoch = "dict-1"
        self.clients: dict[str, ClientRow] = {}
        self.heads: dict[str, tuple[str, int]] = {}  # channel -> (epoch, head)
        self.events: dict[str, dict[int, tuple[float, Message]]] = {}
        self.keys: dict[tuple[str, str], float] = {}
        self.reads: dict[tuple[str, str], int] = {}
        self.present: dict[tuple[str, str, str], PresenceEntry] = {}

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def _info(self, channel: str) -> ChannelInfo | None:
        if channel not in self.heads:
            return None
        epoch, head = self.heads[channel]
        return ChannelInfo(epoch, head, min(self.events[channel], default=head + 1))

    async def load(
        self,
        *,
        clients: Collection[str] = (),
        channels: Collection[str] = (),
        keys: Collection[tuple[str, str]] = (),
    ) -> Snapshot:
        await trio.lowlevel.checkpoint()
        found = Snapshot(self.epoch)
        found.clients.update({c: self.clients[c] for c in clients if c in self.clients})
        found.channels.update({c: i for c in channels if (i := self._info(c)) is not None})
        found.keys.update({k: self.keys[k] for k in keys if k in self.keys})
        return found

    async def write(self, batch: WriteBatch) -> None:
        await trio.lowlevel.checkpoint()
        for append in batch.appends:  # every precondition first: all or nothing
            if self.heads.get(append.channel, ("", 0))[1] != append.after:
                raise StoreConflict(append.channel)
        for update in batch.clients:
            if self.clients.get(update.client_id) != update.before:
                raise StoreConflict(update.client_id)
        for append in batch.appends:
            log = self.events.setdefault(append.channel, {})
            for event in append.events:
                log[event.offset] = (batch.time, event)
            head = append.events[-1].offset if append.events else append.after
            self.heads[append.channel] = (append.epoch, head)
            for offset, (at, _) in list(log.items()):
                if offset < append.keep_from or at < append.drop_before:
                    del log[offset]
        for update in batch.clients:
            self.clients[update.client_id] = update.after
        self.keys.update(dict.fromkeys(batch.keys, batch.time))
        if batch.forget_keys_before is not None:
            cutoff = batch.forget_keys_before
            self.keys = {k: at for k, at in self.keys.items() if at >= cutoff}

    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        await trio.lowlevel.checkpoint()
        log = self.events.get(channel, {})
        return [log[o][1] for o in sorted(log) if o > after][:limit]

    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        await trio.lowlevel.checkpoint()
        if offset <= self.reads.get((channel, user), 0):
            return False
        self.reads[channel, user] = offset
        return True

    async def receipts(self, channel: str) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return {user: at for (name, user), at in self.reads.items() if name == channel}

    async def presence(self, channel: str, user: str | None = None) -> list[PresenceEntry]:
        await trio.lowlevel.checkpoint()
        return [e for e in self.present.values() if e.channel == channel and user in (None, e.user)]

    async def presence_channels(self, user: str) -> set[str]:
        await trio.lowlevel.checkpoint()
        return {e.channel for e in self.present.values() if e.user == user}

    async def presence_of(self, connection: str) -> list[PresenceEntry]:
        await trio.lowlevel.checkpoint()
        return [e for e in self.present.values() if e.connection == connection]

    async def put_presence(self, entry: PresenceEntry) -> None:
        await trio.lowlevel.checkpoint()
        self.present[entry.channel, entry.user, entry.connection] = entry

    async def drop_presence(self, channel: str, user: str, connection: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self.present.pop((channel, user, connection), None) is not None


async def main() -> None:
    await check_store(DictStore, persistent=False)  # raises AssertionError naming a broken rule
    print("DictStore keeps the store contract")
    config = RealtimeConfig(durability="memory", network_monitor=False)
    store = DictStore()
    async with open_memory_server(store=store) as server:
        connect = server.connector()
        async with (
            open_realtime(server.url, token="bob", config=config, connector=connect) as bob,
            open_realtime(server.url, token="alice", config=config, connector=connect) as alice,
        ):
            await bob.subscribe("room:1")
            assert await (await alice.send("room:1", "hello", {"n": 1})).wait() == Acked(seq=1)
            async for message in bob.messages("room:1"):
                print(f"bob got {message.payload} from {message.sender}, offset {message.offset}")
                break
    print("rows kept:", store.clients)


if __name__ == "__main__":
    trio.run(main)
