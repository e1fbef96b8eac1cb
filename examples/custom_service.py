"""A service of your own, written with public names only: emoji reactions in a channel.

The frames and the server half come from examples/server_handler.py. The client half, here, is a
``Service``: it talks to its connection only through ``self.host`` (the
public ``ServiceHost``: send a control frame, make a request, wait until connected, read the
state), owns its settings (``max_per_channel``) and offers a stream of what it hears. It runs
against the in-memory reference server.

Run it: python examples/custom_service.py
"""

from __future__ import annotations

from typing import ClassVar

import trio

from trio_realtime import RealtimeConfig, Service, Stream, open_realtime
from trio_realtime.services import STANDARD_SERVICES
from trio_realtime.testing import open_memory_server

# The frames (a new meta kind, declared to the protocol) and the server half (a handler
# registered by kind) are those of examples/server_handler.py: importing it declares them.
from server_handler import React, Reacted  # isort: skip


class Reactions(Service):
    """The client half: ``conn.service(Reactions)``."""

    name: ClassVar[str] = "reactions"
    frames: ClassVar[tuple[type, ...]] = (Reacted,)

    def __init__(self, *, max_per_channel: int = 100) -> None:
        self.max_per_channel = max_per_channel
        self.seen: dict[str, list[Reacted]] = {}
        self._changes: trio.MemorySendChannel[Reacted] | None = None

    async def react(self, channel: str, emoji: str) -> None:
        """React in ``channel`` (waits for the link: a reaction is not worth keeping offline)."""
        if not isinstance(emoji, str) or not emoji:
            raise ValueError(f"emoji must be a non-empty string, got {emoji!r}")
        await self.host.wait_connected()
        self.host.send_control(React(channel, emoji))

    def reactions(self) -> Stream[Reacted]:
        """Every reaction heard from now on, until the connection closes."""
        send, receive = trio.open_memory_channel[Reacted](self.max_per_channel)
        self._changes = send
        return Stream(receive)

    def on_frame(self, frame: object) -> None:
        assert isinstance(frame, Reacted)
        kept = self.seen.setdefault(frame.channel, [])
        kept[:] = [*kept, frame][-self.max_per_channel :]
        if self._changes is not None:
            self._changes.send_nowait(frame)

    def close(self) -> None:
        if self._changes is not None:
            self._changes.close()


CONFIG = RealtimeConfig(durability="memory", network_monitor=False)


async def main() -> None:
    async with open_memory_server() as server:
        connect = server.connector()
        services = [*STANDARD_SERVICES, Reactions]
        async with (
            open_realtime(
                server.url, token="bob", config=CONFIG, connector=connect, services=services
            ) as bob,
            open_realtime(
                server.url, token="alice", config=CONFIG, connector=connect, services=services
            ) as alice,
        ):
            await bob.subscribe("room")
            async with bob.service(Reactions).reactions() as heard:
                await alice.service(Reactions).react("room", "🎉")
                with trio.fail_after(5):
                    reaction = await heard.__anext__()
            print(f"bob saw {reaction.user} react with {reaction.emoji} in {reaction.channel}")
            assert (reaction.user, reaction.emoji) == ("alice", "🎉")


if __name__ == "__main__":
    trio.run(main)
