"""Bad input to the reference server gets the documented error frame or close code, never crashes
it, and never affects other clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio_websocket

from trio_realtime import Acked, RealtimeConfig, Rejected, open_realtime
from trio_realtime.server import AllowAll, MemoryStore, RealtimeServer, ServerConfig, open_server

RESUME = {"type": "resume", "protocol": 1, "client_id": "c-raw", "last_ack_seq": 0}


def event(number: int, **changes: object) -> dict[str, object]:
    frame: dict[str, object] = {
        "type": "event",
        "seq": number,
        "idempotency_key": f"c-raw:{number}",
        "channel": "room",
        "event": "e",
        "payload": {},
        "timestamp": 1,
    }
    frame.update(changes)
    return frame


async def receive_frames(
    ws: trio_websocket.WebSocketConnection, into: list[dict[str, object]]
) -> None:
    """Read one message from the server (a frame or a batch of them) onto ``into``."""
    data = json.loads(await ws.get_message())
    into.extend(data if isinstance(data, list) else [data])


async def exchange(
    server: RealtimeServer, *messages: str | bytes
) -> tuple[list[dict[str, object]], int | None]:
    """Send raw messages; collect the frames received until the server closes; and its code."""
    url = f"ws://127.0.0.1:{server.port}/realtime"
    received: list[dict[str, object]] = []
    async with trio_websocket.open_websocket_url(url, subprotocols=["trio-realtime.v1"]) as ws:
        for message in messages:
            await ws.send_message(message)
        with trio.fail_after(10):
            try:
                while True:
                    await receive_frames(ws, received)
            except trio_websocket.ConnectionClosed as exc:
                code = exc.reason.code
            finally:
                # trio-websocket 0.12 can leave the TCP stream open after a close it received.
                await trio.aclose_forcefully(ws._stream)
            return received, code
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.fixture
async def server(tmp_path: Path) -> object:
    config = ServerConfig(handshake_timeout=1.0, max_frame_bytes=64 * 1024)
    async with open_server(MemoryStore(), AllowAll(), config=config) as running:
        yield running


def resumed(*frames: dict[str, object]) -> list[str]:
    return [json.dumps(RESUME), *(json.dumps(f) for f in frames)]


async def test_garbage_before_resume(server: RealtimeServer) -> None:
    frames, code = await exchange(server, "this is not json")
    assert code == 4000
    assert frames[-1]["type"] == "error"
    assert frames[-1]["fatal"] is True


async def test_frames_before_resume(server: RealtimeServer) -> None:
    frames, code = await exchange(server, json.dumps(event(1)))
    assert code == 4000
    assert "resume" in str(frames[-1]["message"]) or "event" in str(frames[-1]["message"]).lower()


async def test_unsupported_protocol_version(server: RealtimeServer) -> None:
    _, code = await exchange(server, json.dumps({**RESUME, "protocol": 9}))
    assert code == 4400


async def test_silent_connection_is_timed_out(server: RealtimeServer) -> None:
    _, code = await exchange(server)
    assert code == 4000


async def test_wrong_types_name_the_field(server: RealtimeServer) -> None:
    frames, code = await exchange(server, *resumed(event(1, seq="one")))
    assert code == 4000
    assert frames[-1]["type"] == "error"
    assert "seq" in str(frames[-1]["message"])


async def test_out_of_order_seq(server: RealtimeServer) -> None:
    frames, code = await exchange(server, *resumed(event(1), event(3)))
    assert code == 4000
    errors = [f for f in frames if f["type"] == "error"]
    assert errors[-1]["code"] == "out_of_order"
    assert errors[-1]["fatal"] is True


async def test_oversized_messages(server: RealtimeServer) -> None:
    # A batch over max_frame_bytes (64 KiB here): 1009.
    batch = json.dumps([event(1, payload="x" * 40_000), event(2, payload="x" * 40_000)])
    _, code = await exchange(server, json.dumps(RESUME), batch)
    assert code == 1009
    # Beyond 4x max_frame_bytes: trio-websocket refuses it with 1009 before we read it.
    _, code = await exchange(server, *resumed(event(1, payload="x" * 300_000)))
    assert code == 1009


async def test_a_lone_oversized_event_is_rejected_not_looped(
    server: RealtimeServer, tmp_path: Path
) -> None:
    # Resending a too-large event after every 1009 would loop forever: instead it is rejected,
    # its seq consumed, and what follows goes through.
    url = f"ws://127.0.0.1:{server.port}/realtime"
    async with open_realtime(url, journal_dir=tmp_path / "c", token="c") as conn:
        big = await conn.send("room", "e", "x" * 100_000)
        small = await conn.send("room", "e", "ok")
        with trio.fail_after(10):
            assert await big.wait() == Rejected(1, "too_large", "event exceeds max_frame_bytes")
            assert await small.wait() == Acked(2)
        assert conn.total_reconnects == 0


async def test_huge_and_deep_json(server: RealtimeServer) -> None:
    for bad in ("[" * 5000 + "]" * 5000, json.dumps({**RESUME, "last_ack_seq": 10**30})):
        _, code = await exchange(server, bad)
        assert code == 4000


async def test_other_clients_are_unaffected(server: RealtimeServer, tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{server.port}/realtime"
    config = RealtimeConfig(initial_retry_delay=0.05, max_retry_delay=0.2)
    async with open_realtime(
        url, journal_dir=tmp_path / "good", token="good", config=config
    ) as conn:
        for bad in ("garbage", json.dumps(event(1)), "[" * 5000):
            await exchange(server, bad)
            receipt = await conn.send("room", "e", bad[:10])
            with trio.fail_after(10):
                assert isinstance(await receipt.wait(), Acked)
        assert conn.total_reconnects == 0


async def test_retransmission_is_acked_as_duplicate_and_not_stored_twice(
    server: RealtimeServer,
) -> None:
    frames, _ = await exchange(server, *resumed(event(1), event(2)), json.dumps({"type": "x"}))
    assert {"type": "ack", "ack_seq": 1, "duplicates": []} in frames
    # A new connection of the same client sends 2 and 3 again (say it never saw the ack of 2).
    frames, _ = await exchange(server, *resumed(event(2), event(3)), json.dumps({"type": "x"}))
    acks = [f for f in frames if f["type"] == "ack"]
    assert acks[0] == {"type": "ack", "ack_seq": 2, "duplicates": [2]}
    assert acks[-1]["ack_seq"] == 3
    # The bad frame came last: the acks of what came before it go out before its fatal error.
    assert [f["type"] for f in frames][-1] == "error"
    stored = await server.store.read("room", 0, 10)
    assert [e.offset for e in stored] == [1, 2, 3]


async def test_caller_idempotency_key_is_deduplicated_across_clients_of_one_user(
    server: RealtimeServer, tmp_path: Path
) -> None:
    """Two journals (two client_ids) of user "a" send key K: stored once, the second acked as a
    duplicate. User "b" sending K is another event: keys are scoped per user."""
    url = f"ws://127.0.0.1:{server.port}/realtime"
    outcomes = []
    for journal, user in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        async with open_realtime(url, journal_dir=tmp_path / journal, token=user) as conn:
            receipt = await conn.send("orders", "order", {"id": 42}, idempotency_key="order-42")
            outcomes.append(await receipt.wait())
    assert outcomes == [Acked(seq=1), Acked(seq=1, duplicate=True), Acked(seq=1)]
    stored = await server.store.read("orders", 0, 10)
    assert [e.sender for e in stored] == ["a", "b"]
