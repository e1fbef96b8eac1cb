"""subscribe() at any moment of the connection's life takes effect on the current link."""

from __future__ import annotations

import attrs
import trio

from trio_realtime import ConnectionState, open_realtime
from trio_realtime.transports import Transport, memory_transport_pair

from ..helpers import collect
from ..services.conftest import MEMORY, URL, drop, memory_server, wait_state


class HeldAnswers:
    """A server-side transport whose sends wait while ``hold.gate`` is not set; ``hold.held`` is
    set once one waits there (the resume_response of a new link among them)."""

    def __init__(self, inner: Transport, hold: Hold) -> None:
        self._inner = inner
        self._hold = hold

    async def send(self, data: bytes) -> None:
        if not self._hold.gate.is_set():
            self._hold.held.set()
            await self._hold.gate.wait()
        await self._inner.send(data)

    async def receive(self) -> bytes | str:
        return await self._inner.receive()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.aclose(code, reason)

    async def abort(self) -> None:
        await self._inner.abort()


@attrs.define
class Hold:
    gate: trio.Event = attrs.Factory(trio.Event)
    held: trio.Event = attrs.Factory(trio.Event)


async def test_subscribing_while_the_resume_is_answered_is_not_forgotten() -> None:
    """A subscription made after the ``resume`` went out but before its answer came back is in
    neither: it must still be asked for on this link (it used to wait for the next reconnect)."""
    hold = Hold()
    hold.gate.set()
    async with memory_server() as ms:
        links: list[int] = []

        async def connect(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
            client, server_end = memory_transport_pair()
            links.append(1)
            ms.nursery.start_soon(ms.server.handle, HeldAnswers(server_end, hold))
            await trio.lowlevel.checkpoint()
            return client

        async with (
            open_realtime(URL, config=MEMORY, token="reader", connector=connect) as reader,
            ms.client("writer") as writer,
        ):
            await wait_state(reader, ConnectionState.CONNECTED)
            hold.gate = trio.Event()  # hold what the server sends next: the resume_response
            drop(ms.server, "reader")
            with trio.fail_after(10):
                await hold.held.wait()  # the second link's resume is answered, and held
            assert len(links) == 2
            assert reader.state is not ConnectionState.CONNECTED
            await reader.subscribe("room", from_offset=0)
            hold.gate.set()
            await wait_state(reader, ConnectionState.CONNECTED)
            await writer.send_many("room", "n", [1, 2, 3])
            got = await collect(reader, "room", 3, within=5)
            assert [m.payload for m in got] == [1, 2, 3]
            assert len(links) == 2  # on the same link, not after another reconnect
