"""The server half of a service of your own: a new meta kind ("react"), declared to the protocol,
and its handler registered by kind. Clients here speak the wire protocol directly (JSON over a
WebSocket), as any client of the reference server may.

Run it: python examples/server_handler.py
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import attrs
import trio
import trio_websocket

from trio_realtime.server import (
    AllowAll,
    BaseHandler,
    FrameKind,
    MemoryStore,
    MetaContext,
    Role,
    open_server,
    register_frame_kind,
    register_handler,
)


@attrs.frozen
class React:
    """Client -> server: {"type": "meta", "kind": "react", "channel": ..., "emoji": ...}."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "react"
    channel: str
    emoji: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "meta", "kind": self.KIND, "channel": self.channel, "emoji": self.emoji}


@attrs.frozen
class Reacted:
    """Server -> the channel's subscribers: the reaction and who made it."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "reacted"
    channel: str
    emoji: str
    user: str

    def to_wire(self) -> dict[str, Any]:
        wire = {"type": "meta", "kind": self.KIND, "channel": self.channel}
        return {**wire, "emoji": self.emoji, "user": self.user}


# Declared once: who sends each kind, and how it is decoded (Fields names the field at fault).
register_frame_kind(
    FrameKind(React, Role.CLIENT, lambda f: React(f.string("channel"), f.string("emoji")))
)
register_frame_kind(
    FrameKind(
        Reacted,
        Role.SERVER,
        lambda f: Reacted(f.string("channel"), f.string("emoji"), f.string("user")),
    )
)


class Reactions(BaseHandler):
    """Relays each reaction to the channel. The server has checked the channel's name and that
    the sender may subscribe to it; the user comes from the sender's token."""

    frames: ClassVar[tuple[type, ...]] = (React,)

    async def handle(self, context: MetaContext, frame: React) -> None:
        await trio.lowlevel.checkpoint()
        if len(frame.emoji) > 8:
            return  # bound what a remote user controls
        context.broadcast(frame.channel, Reacted(frame.channel, frame.emoji, context.identity.user))


register_handler(lambda server: Reactions())  # for every server started from now on


async def client(nursery: trio.Nursery, port: int, user: str) -> trio_websocket.WebSocketConnection:
    ws = await trio_websocket.connect_websocket_url(
        nursery, f"ws://127.0.0.1:{port}/realtime", subprotocols=["trio-realtime.v1"]
    )
    resume = {"type": "resume", "protocol": 1, "client_id": f"c-{user}", "token": user}
    await ws.send_message(json.dumps({**resume, "last_ack_seq": 0}))
    await ws.get_message()  # resume_response
    return ws


async def main() -> None:
    async with open_server(MemoryStore(), AllowAll()) as server, trio.open_nursery() as nursery:
        assert server.port is not None
        bob = await client(nursery, server.port, "bob")
        await bob.send_message(json.dumps({"type": "subscribe", "rid": 1, "channel": "room"}))
        assert json.loads(await bob.get_message())["type"] == "subscribed"
        await bob.get_message()  # the channel's presence state
        alice = await client(nursery, server.port, "alice")
        await alice.send_message(
            json.dumps({"type": "meta", "kind": "react", "channel": "room", "emoji": "🎉"})
        )
        frame = json.loads(await bob.get_message())
        print(f"bob sees: {frame}")
        assert frame == {
            "type": "meta",
            "kind": "reacted",
            "channel": "room",
            "emoji": "🎉",
            "user": "alice",
        }
        for ws in (alice, bob):
            await ws.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
