"""The server keeps reading a connection while its events are being committed: what arrives
meanwhile joins the next transaction. Acks still follow the commits, in order, and nothing is
acked past a commit that failed."""

from __future__ import annotations

import json

import trio
import trio_websocket

from trio_realtime.server import (
    Action,
    AllowAll,
    Identity,
    MemoryStore,
    ServerConfig,
    WriteBatch,
    open_server,
)

from .test_bad_input import RESUME, event, receive_frames


class GatedStore(MemoryStore):
    """Each commit waits for the test to open the gate; records what each commit held."""

    def __init__(self, *, fail_first: bool = False) -> None:
        super().__init__()
        self.commits: list[list[int]] = []
        self.gate = trio.Event()
        self.waiting = trio.Event()
        self.fail_first = fail_first

    async def write(self, batch: WriteBatch) -> None:
        # The seq of each event, from its default key "c-raw:{seq}".
        seqs = [int(e.idempotency_key.rpartition(":")[2]) for a in batch.appends for e in a.events]
        self.commits.append(seqs)
        self.waiting.set()
        await self.gate.wait()
        if self.fail_first and len(self.commits) == 1:
            raise OSError(28, "No space left on device")
        await super().write(batch)


async def _talk(
    store: GatedStore, messages: list[dict[str, object]]
) -> tuple[list[dict[str, object]], int]:
    config = ServerConfig(handshake_timeout=5.0)
    frames: list[dict[str, object]] = []
    code = -1
    async with open_server(store, AllowAll(), config=config) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        async with trio_websocket.open_websocket_url(url, subprotocols=["trio-realtime.v1"]) as ws:
            await ws.send_message(json.dumps(RESUME))
            await ws.send_message(json.dumps(messages[0]))
            await store.waiting.wait()  # the first commit is running (and held)
            for message in messages[1:]:
                await ws.send_message(json.dumps(message))
            # Everything sent after it reached the server while the first commit is held: the
            # server answers a ping sent last only once it has read past the events before it.
            await ws.send_message(json.dumps({"type": "ping", "t": 7}))
            with trio.fail_after(10):
                while not any(f["type"] == "pong" for f in frames):
                    await receive_frames(ws, frames)
                store.gate.set()
                try:
                    while not (acks := [f for f in frames if f["type"] == "ack"]) or acks[-1][
                        "ack_seq"
                    ] != len(messages):
                        await receive_frames(ws, frames)
                except trio_websocket.ConnectionClosed as exc:
                    code = exc.reason.code
                finally:
                    await trio.aclose_forcefully(ws._stream)
    return frames, code


async def test_events_read_during_a_commit_share_the_next_one() -> None:
    store = GatedStore()
    frames, _ = await _talk(store, [event(1), event(2), event(3), event(4)])
    assert store.commits == [[1], [2, 3, 4]]  # not one commit per message
    acks = [f["ack_seq"] for f in frames if f["type"] == "ack"]
    assert acks == sorted(acks)
    assert acks[-1] == 4
    # No ack before the commit that covers it: the pong came first, while commit 1 was held.
    assert [f["type"] for f in frames].index("pong") < [f["type"] for f in frames].index("ack")
    assert [e.offset for e in await store.read("room", 0, 10)] == [1, 2, 3, 4]


async def test_nothing_is_acked_past_a_failed_commit() -> None:
    store = GatedStore(fail_first=True)
    frames, code = await _talk(store, [event(1), event(2), event(3)])
    assert code == 1011
    assert [f for f in frames if f["type"] == "ack"] == []
    assert any(f["type"] == "error" and f["code"] == "internal" for f in frames)
    assert await store.read("room", 0, 10) == []  # the later messages were not committed either


class CountingAuth(AllowAll):
    """Refuses the channel ``secret``; records every question asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def authorize(self, identity: Identity, action: Action, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        if action is not Action.PUBLISH:
            return True
        self.asked.append(channel)
        return channel != "secret"


async def test_publishing_rights_are_asked_once_per_channel_per_message() -> None:
    auth = CountingAuth()
    store = MemoryStore()
    channels = ["room", "secret", "room", "room", "secret", "room"]
    batch = [event(seq, channel=channel) for seq, channel in enumerate(channels, 1)]
    async with open_server(store, auth, config=ServerConfig(handshake_timeout=5.0)) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        async with trio_websocket.open_websocket_url(url, subprotocols=["trio-realtime.v1"]) as ws:
            await ws.send_message(json.dumps(RESUME))
            await ws.send_message(json.dumps(batch))
            await ws.send_message(json.dumps(batch[:1]))  # a duplicate, in a new message
            frames: list[dict[str, object]] = []
            with trio.fail_after(10):
                while not any(f["type"] == "ack" and f["duplicates"] for f in frames):
                    await receive_frames(ws, frames)
    assert auth.asked == ["room", "secret"]  # not once per event
    refused = [f["seq"] for f in frames if f["type"] == "error"]
    assert refused == [2, 5]
    assert [e.payload for e in await store.read("room", 0, 10)] == [{}, {}, {}, {}]
    acks = [f for f in frames if f["type"] == "ack"]
    assert 6 in [ack["ack_seq"] for ack in acks]
    assert [ack["duplicates"] for ack in acks if ack["duplicates"]] == [[1]]
