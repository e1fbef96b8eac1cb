"""Channel authorization: a token's claims, and an authenticator of your own.

Run it: python examples/authorization.py
"""

from __future__ import annotations

import trio

from trio_realtime import RealtimeConfig, open_realtime
from trio_realtime.server import (
    Action,
    HmacAuthenticator,
    Identity,
    MemoryStore,
    make_token,
    open_server,
)

SECRET = b"example secret, keep yours out of source code"
CONFIG = RealtimeConfig(durability="memory")


class ReadOnlyAnnouncements:
    """Your own rules on top of the token's claims: only "staff" publish to "announcements"."""

    def __init__(self, secret: bytes) -> None:
        self._tokens = HmacAuthenticator(secret)

    async def authenticate(self, token: str | None) -> Identity | None:
        return await self._tokens.authenticate(token)  # None refuses the connection (4001)

    async def authorize(self, identity: Identity, action: Action, channel: str) -> bool:
        if channel == "announcements" and action is Action.PUBLISH:
            await trio.lowlevel.checkpoint()
            return identity.user == "staff"
        return await self._tokens.authorize(identity, action, channel)


async def main() -> None:
    # alice may subscribe to and publish in the rooms, and read the announcements.
    token = make_token(
        SECRET, "alice", ttl=3600, subscribe=["room:*", "announcements"], publish=["room:*"]
    )
    async with (
        open_server(MemoryStore(), ReadOnlyAnnouncements(SECRET)) as server,
        open_realtime(
            f"ws://127.0.0.1:{server.port}/realtime", token=token, config=CONFIG
        ) as alice,
    ):
        outcomes = []
        for channel in ("room:1", "lobby", "announcements"):
            receipt = await alice.send(channel, "hello", {"text": "hi"})
            outcomes.append(await receipt.wait())
            print(f"{channel}: {outcomes[-1]}")
        # room:1: Acked(seq=1, duplicate=False)
        # lobby: Rejected(seq=2, code='forbidden', ...)           (not in the token's claims)
        # announcements: Rejected(seq=3, code='forbidden', ...)   (refused by the rule above)
        assert [type(o).__name__ for o in outcomes] == ["Acked", "Rejected", "Rejected"]


if __name__ == "__main__":
    trio.run(main)
