"""A service with a new meta kind, defined here only: its frames (declared to the protocol), its
server half (a handler registered by kind) and its client half (a Service). It works end to end
with no edit to any module of the package, and with public names only (the client half talks to
the connection through the public ``ServiceHost``)."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import trio

from trio_realtime import RealtimeConfig, Service, open_realtime
from trio_realtime.server import (
    BaseHandler,
    Fields,
    FrameKind,
    MemoryStore,
    MetaContext,
    Role,
    register_frame_kind,
    register_handler,
)
from trio_realtime.services import STANDARD_SERVICES
from trio_realtime.testing import open_memory_server

from ..helpers import Watched
from ._raw import connect, open_front

CONFIG = RealtimeConfig(durability="memory", network_monitor=False)


@attrs.frozen
class React:
    """Client -> server: a reaction in a channel."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "react"
    channel: str
    emoji: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "kind": self.KIND, "channel": self.channel, "emoji": self.emoji}


@attrs.frozen
class Reacted:
    """Server -> subscribers: who reacted with what."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "reacted"
    channel: str
    emoji: str
    user: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "kind": self.KIND,
            "channel": self.channel,
            "emoji": self.emoji,
            "user": self.user,
        }


def _react(f: Fields) -> React:
    return React(channel=f.string("channel"), emoji=f.string("emoji"))


def _reacted(f: Fields) -> Reacted:
    return Reacted(channel=f.string("channel"), emoji=f.string("emoji"), user=f.string("user"))


register_frame_kind(FrameKind(React, Role.CLIENT, _react))
register_frame_kind(FrameKind(Reacted, Role.SERVER, _reacted))


class ReactionHandler(BaseHandler):
    """The server half: relays each reaction to the channel, naming the user."""

    frames: ClassVar[tuple[type, ...]] = (React,)

    async def handle(self, context: MetaContext, frame: React) -> None:
        await trio.lowlevel.checkpoint()
        context.broadcast(frame.channel, Reacted(frame.channel, frame.emoji, context.identity.user))


register_handler(lambda server: ReactionHandler())


class Reactions(Service):
    """The client half: ``conn.reactions`` in the connection's services."""

    name = "reactions"
    frames = (Reacted,)

    def __init__(self) -> None:
        self.seen: Watched[Reacted] = Watched()

    def react(self, channel: str, emoji: str) -> None:
        self.host.check_open()
        self.host.send_control(React(channel, emoji))

    def on_frame(self, frame: object) -> None:  # type: ignore[override]
        assert isinstance(frame, Reacted)
        self.seen.append(frame)


async def test_a_service_of_a_new_kind_works_end_to_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = (*STANDARD_SERVICES, Reactions)
    async with open_memory_server() as server:
        connect = server.connector()
        async with (
            open_realtime(
                server.url, token="bob", config=CONFIG, connector=connect, services=services
            ) as bob,
            open_realtime(
                server.url, token="alice", config=CONFIG, connector=connect, services=services
            ) as alice,
        ):
            await bob.subscribe("room")
            mine = alice.service(Reactions)
            theirs = bob.service(Reactions)
            assert isinstance(mine, Reactions)
            assert isinstance(theirs, Reactions)
            mine.react("room", "🎉")
            await theirs.seen.wait_until(lambda: len(theirs.seen) == 1)
            assert theirs.seen == [Reacted("room", "🎉", "alice")]


async def test_the_engine_checks_a_new_kind_before_its_handler() -> None:
    """The channel name of a frame of a new kind is checked by the engine (so is the sender's
    right to subscribe), before any handler sees it."""
    async with open_front("memory", MemoryStore()) as server, connect(server, "alice") as alice:
        await alice.send(React("x" * 300, "🎉").to_wire(), React("room", "👍").to_wire())
        await alice.ping()
        assert [(f["code"], f.get("fatal", False)) for f in alice.errors()] == [
            ("invalid_name", False)
        ]
