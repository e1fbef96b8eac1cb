"""Presence: alice and bob announce themselves in a room; carol watches who comes and goes.

Run it: python examples/presence.py
"""

from __future__ import annotations

import trio

from trio_realtime import PresenceStatus, RealtimeConfig, open_realtime
from trio_realtime.server import AllowAll, MemoryStore, ServerConfig, open_server

CONFIG = RealtimeConfig(durability="memory")  # this example keeps nothing on disk


async def main() -> None:
    server_config = ServerConfig(presence_timeout=0.5)  # leave 0.5 s after the last connection
    async with open_server(MemoryStore(), AllowAll(), config=server_config) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        async with open_realtime(url, token="carol", config=CONFIG) as carol:
            await carol.subscribe("room:1")  # presence comes with the channel's subscription
            changes = carol.presence.changes("room:1")
            print("at first:", dict((await changes.__anext__()).joins))
            async with open_realtime(url, token="alice", config=CONFIG) as alice:
                await alice.presence.update(
                    PresenceStatus.ONLINE, channel="room:1", metadata={"name": "Alice"}
                )
                change = await changes.__anext__()
                print("joined:", {user: m.status.value for user, m in change.joins.items()})
                async with open_realtime(url, token="bob", config=CONFIG) as bob:
                    await bob.presence.update(PresenceStatus.BUSY, channel="room:1")
                    await changes.__anext__()
                    print("members:", sorted(carol.presence.members("room:1")))
                    print("is bob online?", carol.presence.is_online("bob", "room:1"))
                    await bob.presence.update(PresenceStatus.OFFLINE, channel="room:1")
                    print("left:", sorted((await changes.__anext__()).leaves))
            # alice's connection closed: she leaves once the grace period is over.
            print("left:", sorted((await changes.__anext__()).leaves))


if __name__ == "__main__":
    trio.run(main)
