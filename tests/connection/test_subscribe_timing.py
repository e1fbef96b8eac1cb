"""subscribe() at any moment of the connection's life takes effect on the current link."""

from __future__ import annotations

import trio

from trio_realtime import ConnectionState, Message, open_realtime
from trio_realtime._transports import Transport, memory_transport_pair

from ..services.conftest import MEMORY, URL, drop, memory_server, wait_state


class HeldAnswers:
    """A server-side transport whose sends wait while ``held`` (the resume_response among them)."""

    def __init__(self, inner: Transport, gate: list[trio.Event]) -> None:
        self._inner = inner
        self._gate = gate

    async def send(self, data: bytes) -> None:
        await self._gate[0].wait()
        await self._inner.send(data)

    async def receive(self) -> bytes | str:
        return await self._inner.receive()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.aclose(code, reason)

    async def abort(self) -> None:
        await self._inner.abort()


async def test_subscribing_while_the_resume_is_answered_is_not_forgotten() -> None:
    """A subscription made after the ``resume`` went out but before its answer came back is in
    neither: it must still be asked for on this link (it used to wait for the next reconnect)."""
    open_gate = trio.Event()
    open_gate.set()
    gate = [open_gate]
    async with memory_server() as ms:
        links: list[int] = []

        async def connect(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
            client, server_end = memory_transport_pair()
            links.append(1)
            ms.nursery.start_soon(ms.server.handle, HeldAnswers(server_end, gate))
            await trio.lowlevel.checkpoint()
            return client

        async with (
            open_realtime(URL, config=MEMORY, token="reader", connector=connect) as reader,
            ms.client("writer") as writer,
        ):
            await wait_state(reader, ConnectionState.CONNECTED)
            gate[0] = trio.Event()  # hold the next resume_response
            drop(ms.server, "reader")
            with trio.fail_after(10):
                while len(links) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # bounded polling: the second link's resume is out
                while not any(s.user == "reader" for s in ms.server.sessions):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert reader.state is not ConnectionState.CONNECTED
            await reader.subscribe("room", from_offset=0)
            gate[0].set()
            await wait_state(reader, ConnectionState.CONNECTED)
            await writer.send_many("room", "n", [1, 2, 3])
            got: list[object] = []
            with trio.fail_after(5):
                async for item in reader.messages("room"):
                    assert isinstance(item, Message)
                    got.append(item.payload)
                    if len(got) == 3:
                        break
            assert got == [1, 2, 3]
            assert len(links) == 2  # on the same link, not after another reconnect
