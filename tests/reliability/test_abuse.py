"""Load and abuse: slowloris, a storm of malformed frames, a slow consumer, a stalled server, and a
store that fails: the server keeps serving others, memory stays bounded, nothing is lost."""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio_websocket

from trio_realtime import (
    Acked,
    OutboxFull,
    RealtimeConfig,
    open_realtime,
)
from trio_realtime._protocol import Ack, ResumeResponse, ServerProtocol, decode_server_message
from trio_realtime.server import (
    AllowAll,
    MemoryStore,
    RealtimeServer,
    ServerConfig,
    SqliteStore,
    WriteBatch,
    open_server,
)
from trio_realtime.transports import (
    LinkClosed,
    Transport,
    connect_websocket,
    memory_transport_pair,
)

from ..figures import record
from ..helpers import Watched

QUICK = RealtimeConfig(
    durability="memory", initial_retry_delay=0.01, max_retry_delay=0.1, network_monitor=False
)
SLOWLORIS = int(os.environ.get("TRIO_REALTIME_SLOWLORIS", "500"))
MALFORMED = int(os.environ.get("TRIO_REALTIME_MALFORMED", "10000"))

#: What the server may answer malformed input with (PROTOCOL.md section 6, docs/protocol.md).
ERROR_CODES = {
    "protocol_error",
    "out_of_order",
    "unsupported_protocol",
    "too_large",
    "rate_limited",
}
CLOSE_CODES = {1000, 1009, 4000, 4400, 4029}


async def test_slowloris_connections_are_timed_out_and_others_are_served() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * SLOWLORIS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * SLOWLORIS + 100), hard))
    config = ServerConfig(handshake_timeout=5.0)
    async with open_server(MemoryStore(), AllowAll(), config=config) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        closed: list[float] = []

        async def raw_tcp() -> None:  # half an HTTP upgrade request, then nothing
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"GET /realtime HTTP/1.1\r\nHost: x\r\n")
                try:
                    while await stream.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass
                closed.append(trio.current_time())

        async def silent_websocket(nursery: trio.Nursery) -> None:  # upgraded, never resumes
            transport = await connect_websocket(nursery, url, 10.0)
            try:
                with pytest.raises(LinkClosed) as info:
                    await transport.receive()  # nothing comes: the server only closes (4000)
                assert info.value.code == 4000
                closed.append(trio.current_time())
            finally:
                await transport.abort()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(SLOWLORIS):
                    if i % 2:
                        nursery.start_soon(raw_tcp)
                    else:
                        nursery.start_soon(silent_websocket, nursery)
                # Meanwhile a normal client is served.
                async with open_realtime(url, config=QUICK, token="normal") as conn:
                    receipts = await conn.send_many("room", "n", list(range(100)))
                    assert [await r.wait() for r in receipts] == [Acked(i + 1) for i in range(100)]
                closed_when_served = len(closed)
        assert len(closed) == SLOWLORIS
        assert closed_when_served == 0  # served while every slow connection still hung on
        record(
            "slowloris",
            {"connections": SLOWLORIS, "timed_out": len(closed), "handshake_timeout_s": 5.0},
        )


def malformed_messages(count: int, seed: int = 5) -> list[list[bytes | str]]:
    """``count`` conversations, each ending in something illegal."""
    rng = random.Random(seed)
    resume = json.dumps({"type": "resume", "protocol": 1, "client_id": "fuzz", "last_ack_seq": 0})

    def event(seq: object, **changes: object) -> str:
        frame = {
            "type": "event",
            "seq": seq,
            "idempotency_key": f"fuzz:{seq}",
            "channel": "c",
            "event": "e",
            "payload": {},
            "timestamp": 1,
        }
        frame.update(changes)
        return json.dumps(frame)

    makers = [
        lambda: [rng.randbytes(rng.randrange(1, 200))],  # garbage bytes
        lambda: ["[" * rng.randrange(200, 5000) + "]" * rng.randrange(0, 10)],  # deep nesting
        lambda: [resume, event(10 ** rng.randrange(20, 400))],  # huge numbers
        lambda: [resume, event(1, channel=rng.choice([1, None, [], {}, True]))],  # wrong types
        lambda: [resume, event(rng.choice(["1", 1.5, -1, None]))],
        lambda: [event(1)],  # an event before resume
        lambda: [resume, resume],  # a second resume
        lambda: [resume, event(1), event(3)],  # a seq skipped
        lambda: [json.dumps({"type": "resume", "protocol": 99, "client_id": "x"})],
        lambda: [resume, json.dumps({"type": rng.choice(["nope", "", 5, None])})],
        lambda: [
            resume,
            json.dumps({"type": "meta", "kind": "presence", "channel": "c", "status": "sleeping"}),
        ],
        lambda: [resume, json.dumps([])],  # an empty batch
        lambda: [resume, "\ud800" if rng.random() < 0.5 else "{" + '"a":1,' * 100],
    ]
    return [rng.choice(makers)() for _ in range(count)]


async def converse(server: RealtimeServer, messages: Sequence[bytes | str]) -> tuple[list, int]:  # type: ignore[type-arg]
    client, server_end = memory_transport_pair()
    frames: list[object] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, server_end)
        try:
            for message in messages:
                await client.send(message)  # type: ignore[arg-type]
            while True:
                frames.extend(decode_server_message(await client.receive()))
        except LinkClosed as exc:
            return frames, exc.code or 1006
    raise AssertionError("unreachable")  # pragma: no cover


async def test_a_storm_of_malformed_frames_gets_only_documented_answers() -> None:
    server = RealtimeServer(MemoryStore(), AllowAll(), ServerConfig(handshake_timeout=1.0))
    outcomes: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        with trio.fail_after(120):
            for messages in malformed_messages(MALFORMED):
                frames, code = await converse(server, messages)
                assert code in CLOSE_CODES, (messages, frames, code)
                for frame in frames:
                    if isinstance(frame, ResumeResponse | Ack):
                        continue  # the answers to what was valid before the illegal part
                    assert getattr(frame, "code", None) in ERROR_CODES, (messages, frame)
                    outcomes[frame.code] = outcomes.get(frame.code, 0) + 1  # type: ignore[attr-defined]
            # The server still serves a well-behaved client.
            client, server_end = memory_transport_pair()
            nursery.start_soon(server.handle, server_end)
            await client.send(
                json.dumps({"type": "resume", "protocol": 1, "client_id": "ok", "last_ack_seq": 0})
            )
            answer = decode_server_message(await client.receive())
            assert isinstance(answer[0], ResumeResponse)
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert not server.sessions
    record("malformed", {"conversations": MALFORMED, "error_frames": outcomes})


async def test_a_consumer_that_never_reads_is_closed_not_buffered() -> None:
    """The server queues at most ``send_queue_bytes`` for a subscriber (the rest stays in the
    store) and closes it (4029) once it accepted nothing for ``max_lag``, instead of buffering
    30 MB. Its writer was cut mid-message: a close frame written after a cut frame would be read
    as its payload (1007), so the link is aborted instead."""
    code, received = await _slow_consumer()
    assert code == 1006
    assert received < 15_000_000  # far less than the 30 MB published: the rest was never queued
    record("slow_consumer", {"published_bytes": 30_000_000, "received_bytes": received})


async def _slow_consumer() -> tuple[int | None, int]:
    config = ServerConfig(send_queue_bytes=500_000, max_lag=2)
    async with (
        open_server(MemoryStore(), AllowAll(), config=config) as server,
        trio.open_nursery() as nursery,
    ):
        url = f"ws://127.0.0.1:{server.port}/realtime"
        # A small receive buffer: the server's writer blocks on this socket before its queue for
        # it overflows, whatever the machine's speed. With loopback's buffers of several MB, a
        # fast server could overflow the queue first and then write all it held and close
        # cleanly, and the "stuck mid-message" case would not be tested at all.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server.port))
        slow = await trio_websocket.wrap_client_stream(
            nursery,
            trio.SocketStream(sock),
            "127.0.0.1",
            "/realtime",
            subprotocols=["trio-realtime.v1"],
            message_queue_size=1,
        )
        resume = {"type": "resume", "protocol": 1, "client_id": "slow", "last_ack_seq": 0}
        await slow.send_message(json.dumps({**resume, "channels": {"room": {"offset": 0}}}))
        await slow.get_message()  # the resume_response; from now on it reads nothing
        (session,) = [s for s in server.sessions if s.client_id == "slow"]
        async with open_realtime(url, config=QUICK, token="pub") as pub:
            with trio.fail_after(60):
                for _ in range(30):  # 30 MB for a reader that takes nothing
                    await pub.send_many("room", "n", [{"pad": "x" * 10_000}] * 100)
                await pub.drain()
        with trio.fail_after(10):
            await session.finished.wait()  # the server gives up on it by itself
        assert session.close_code == 4029
        received = 0

        async def read_all() -> None:
            nonlocal received
            while True:
                received += len(await slow.get_message())

        with trio.fail_after(30), pytest.raises(trio_websocket.ConnectionClosed) as info:
            await read_all()
        # trio-websocket leaves its TCP stream open after an abnormal close (1006).
        await trio.aclose_forcefully(slow._stream)
    return info.value.reason.code, received


async def test_a_stalled_server_cannot_grow_the_client_past_its_outbox_limits() -> None:
    async def stalled(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
        client, end = memory_transport_pair()

        async def resume_then_ignore() -> None:
            proto = ServerProtocol()
            try:
                while True:
                    proto.receive_data(await end.receive())
                    for _ in proto.events():
                        if proto.state.value == "resuming":
                            assert proto.resume is not None
                            await end.send(
                                proto.send(
                                    ResumeResponse(
                                        proto.resume.client_id, "s", 0, 60_000, 1 << 20, 0
                                    )
                                )
                            )
            except LinkClosed:
                pass

        nursery.start_soon(resume_then_ignore)
        await trio.lowlevel.checkpoint()
        return client

    config = RealtimeConfig(
        durability="memory",
        max_outbox_messages=1000,
        max_outbox_bytes=64 * 1024,
        outbox_full="raise",
        network_monitor=False,
        close_grace_period=0,
    )
    async with open_realtime("ws://x/realtime", config=config, connector=stalled) as conn:
        sent = 0

        async def fill() -> None:
            nonlocal sent
            while True:
                await conn.send("room", "n", {"pad": "x" * 100, "n": sent})
                sent += 1

        with pytest.raises(OutboxFull):
            await fill()
        assert conn.metrics.outbox_bytes <= 64 * 1024 + 1024  # at most one event past the limit
        assert conn.pending_count == sent < 1000


class FailingStore(SqliteStore):
    """Commits fail with ENOSPC while ``failing`` is set; ``refused`` records each refusal."""

    failing = False
    refused: Watched[int]

    async def write(self, batch: WriteBatch) -> None:
        if self.failing:
            await trio.lowlevel.checkpoint()
            self.refused.append(len(batch.appends))
            raise OSError(errno.ENOSPC, "No space left on device")
        await super().write(batch)


async def test_a_store_that_fails_loses_nothing(tmp_path: Path) -> None:
    store = FailingStore(os.fspath(tmp_path / "server.sqlite3"))
    store.refused = Watched()
    async with open_server(store, AllowAll()) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        async with open_realtime(url, config=QUICK, token="a") as conn:
            first = await conn.send_many("room", "n", list(range(10)))
            await conn.drain()
            store.failing = True
            second = await conn.send_many("room", "n", list(range(10, 20)))
            # Refused (1011), retransmitted on a new link, refused again:
            await store.refused.wait_until(lambda: len(store.refused) >= 2)
            assert conn.pending_count == 10  # refused by the store: not acked, kept
            assert conn.metrics.total_reconnects >= 1
            store.failing = False
            with trio.fail_after(30):
                await conn.drain()
            assert all(isinstance(r.outcome, Acked) for r in first + second)
        stored = await store.read("room", 0, 100)
    assert [e.payload for e in stored] == list(range(20))


async def test_peers_that_vanish_mid_handshake_do_not_stop_the_server() -> None:
    """Upgrade requests whose sender resets the connection before the answer: the server's
    accept fails for that connection only (it used to end the whole server)."""
    async with open_server(MemoryStore(), AllowAll()) as server:
        request = (
            b"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: trio-realtime.v1\r\n\r\n"
        )
        for _ in range(50):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(request)
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()  # RST before the 101 arrives
        url = f"ws://127.0.0.1:{server.port}/realtime"
        with trio.fail_after(10):
            async with open_realtime(url, config=QUICK, token="after") as conn:
                assert await (await conn.send("room", "n", 1)).wait() == Acked(1)
