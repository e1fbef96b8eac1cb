"""A client's new connection can overlap its old one: the old link is dead but the server does not
know yet, and what it received there is still on its way to the store."""

from __future__ import annotations

import json

import trio

from trio_realtime._protocol import Ack, ResumeResponse, decode_server_message
from trio_realtime.server import AllowAll, MemoryStore, RealtimeServer, WriteBatch
from trio_realtime.transports import Transport, memory_transport_pair


class GatedStore(MemoryStore):
    """Commits wait for ``gate`` (the old connection's commit is slow); ``entered`` is set when
    the first commit is waiting there."""

    gate: trio.Event
    entered: trio.Event

    async def write(self, batch: WriteBatch) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().write(batch)


def frame(**fields: object) -> str:
    return json.dumps(fields)


RESUME = frame(type="resume", protocol=1, client_id="c1", last_ack_seq=0)
EVENT_1 = frame(
    type="event", seq=1, idempotency_key="c1:1", channel="room", event="e", payload=1, timestamp=1
)


async def open_link(server: RealtimeServer, nursery: trio.Nursery) -> Transport:
    client, server_end = memory_transport_pair()
    nursery.start_soon(server.handle, server_end)
    await client.send(RESUME)
    (answer,) = decode_server_message(await client.receive())
    assert isinstance(answer, ResumeResponse)
    assert answer.ack_seq == 0  # neither link's event is stored yet
    return client


async def test_a_seq_received_on_two_overlapping_connections_is_stored_once() -> None:
    store = GatedStore()
    store.gate, store.entered = trio.Event(), trio.Event()
    server = RealtimeServer(store, AllowAll())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        with trio.fail_after(10):
            old = await open_link(server, nursery)
            await old.send(EVENT_1)  # received; its commit waits at the gate
            await store.entered.wait()  # the old connection's commit is in the store
            new = await open_link(server, nursery)  # the client retransmits seq 1 here
            await new.send(EVENT_1)
            store.gate.set()
            acks = [f for f in decode_server_message(await new.receive()) if isinstance(f, Ack)]
            assert acks[-1].ack_seq == 1
        assert [e.payload for e in await store.read("room", 0, 10)] == [1]
        nursery.cancel_scope.cancel()
