"""A client's new connection can overlap its old one: the old link is dead but the server does not
know yet, and what it received there is still on its way to the store."""

from __future__ import annotations

import json

import trio
import trio.testing

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


async def open_link(server: RealtimeServer, nursery: trio.Nursery) -> tuple[Transport, int]:
    """A new link of client c1: resumed; returns it and the ack_seq its resume answer gave."""
    client, server_end = memory_transport_pair()
    nursery.start_soon(server.handle, server_end)
    await client.send(RESUME)
    (answer,) = decode_server_message(await client.receive())
    assert isinstance(answer, ResumeResponse)
    return client, answer.ack_seq


async def test_a_resume_waits_for_the_older_links_commit_and_its_ack_seq_is_final() -> None:
    """The client may withdraw an event the resume says the server lacks: so the answer waits
    until what the older link received is stored, and counts it."""
    store = GatedStore()
    store.gate, store.entered = trio.Event(), trio.Event()
    server = RealtimeServer(store, AllowAll())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        with trio.fail_after(10):
            old, ack_seq = await open_link(server, nursery)
            assert ack_seq == 0
            await old.send(EVENT_1)  # received; its commit waits at the gate
            await store.entered.wait()  # the old connection's commit is in the store
            answers: list[int] = []

            async def resume_again() -> None:
                new, ack_seq = await open_link(server, nursery)
                answers.append(ack_seq)
                await new.send(EVENT_1)  # the client retransmits seq 1: a duplicate
                acks = [f for f in decode_server_message(await new.receive()) if isinstance(f, Ack)]
                assert acks[-1] == Ack(1, (1,))

            async with trio.open_nursery() as inner:
                inner.start_soon(resume_again)
                await trio.testing.wait_all_tasks_blocked()
                assert answers == []  # the resume waits for the old link's commit
                store.gate.set()
            assert answers == [1]  # final: it counts the old link's event
        assert [e.payload for e in await store.read("room", 0, 10)] == [1]
        nursery.cancel_scope.cancel()
