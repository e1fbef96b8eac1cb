"""What queues up for a connection while the server writes to it goes out as one batch message."""

from __future__ import annotations

import json

import trio

from trio_realtime.server import AllowAll, MemoryStore, RealtimeServer
from trio_realtime.server._engine import _BATCH_BYTES, _BATCH_FRAMES, _Session
from trio_realtime.transports import LinkClosed


class Recorder:
    """A transport that records what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes | str] = []

    async def send(self, data: bytes | str) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(data)

    async def receive(self) -> bytes | str:
        await trio.sleep_forever()
        raise LinkClosed(None, "")  # pragma: no cover

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await trio.lowlevel.checkpoint()

    async def abort(self) -> None:
        await trio.lowlevel.checkpoint()


def frames(message: bytes | str) -> list[object]:
    data = json.loads(message)
    return data if isinstance(data, list) else [data]


async def test_queued_messages_go_out_as_one_batch_in_order() -> None:
    transport = Recorder()
    session = _Session(RealtimeServer(MemoryStore(), AllowAll()), transport)
    session.queue(b'{"n":1}')
    session.queue(b'[{"n":2},{"n":3}]')  # already a batch: its frames are spliced in
    session.queue(b'{"n":4}')
    session.close(1000, "")  # the writer sends what is queued, then ends
    await session.writer()
    assert len(transport.sent) == 1
    assert frames(transport.sent[0]) == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]


async def test_a_batch_holds_at_most_batch_frames() -> None:
    transport = Recorder()
    session = _Session(RealtimeServer(MemoryStore(), AllowAll()), transport)
    for n in range(_BATCH_FRAMES + 1):
        session.queue(json.dumps({"n": n}).encode())
    session.close(1000, "")
    await session.writer()
    assert [len(frames(m)) for m in transport.sent] == [_BATCH_FRAMES, 1]
    assert [f for m in transport.sent for f in frames(m)] == [
        {"n": n} for n in range(_BATCH_FRAMES + 1)
    ]


async def test_a_lone_message_goes_out_as_it_is() -> None:
    transport = Recorder()
    session = _Session(RealtimeServer(MemoryStore(), AllowAll()), transport)
    session.queue(b'{"n":1}')
    session.close(1000, "")
    await session.writer()
    assert transport.sent == [b'{"n":1}']


async def test_a_batch_grows_past_batch_bytes_by_one_message_at_most() -> None:
    transport = Recorder()
    session = _Session(RealtimeServer(MemoryStore(), AllowAll()), transport)
    big = json.dumps({"x": "y" * (_BATCH_BYTES // 3)}).encode()  # a third of the limit, and a bit
    for _ in range(5):
        session.queue(big)
    session.close(1000, "")
    await session.writer()
    # 1, 2 and 3 thirds: the third crosses the limit and closes the batch; then the other two.
    assert [len(frames(m)) for m in transport.sent] == [3, 2]
