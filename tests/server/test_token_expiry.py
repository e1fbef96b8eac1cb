"""A token's expiry is enforced during the connection: the server closes 4001 at expiry, the
client refreshes through its auth delegate and resumes, and nothing is lost or duplicated."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from trio_realtime import Acked, CachedAuth, RealtimeConfig, open_realtime
from trio_realtime.server import HmacAuthenticator, SqliteStore, make_token, open_server

from ..helpers import collect

SECRET = b"e" * 32
QUICK = RealtimeConfig(
    durability="memory", initial_retry_delay=0.01, max_retry_delay=0.1, network_monitor=False
)


async def test_a_token_that_expires_mid_connection_is_refreshed_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    minted: list[str] = []

    async def fetch() -> str:
        await trio.lowlevel.checkpoint()
        minted.append(make_token(SECRET, "alice", ttl=2))  # expires within 1-2 s
        return minted[-1]

    auth = CachedAuth(fetch)
    store = SqliteStore(os.fspath(tmp_path / "server.sqlite3"))
    count = 80
    async with open_server(store, HmacAuthenticator(SECRET)) as server:
        url = f"ws://127.0.0.1:{server.port}/realtime"
        bob_token = make_token(SECRET, "bob")
        async with (
            open_realtime(url, config=QUICK, token=bob_token) as bob,
            open_realtime(url, config=QUICK, auth=auth) as alice,
        ):
            await bob.subscribe("room")
            receipts = []
            for number in range(count):  # 4 s of sending: across at least two expiries
                receipts.append(await alice.send("room", "n", number))
                await trio.sleep(0.05)  # pacing, not waiting for anything
            with trio.fail_after(20):
                outcomes = [await receipt.wait() for receipt in receipts]
            got = await collect(bob, "room", count)
    assert outcomes == [Acked(seq=n) for n in range(1, count + 1)]
    assert [m.payload for m in got] == list(range(count))  # in order, once each
    # A token is fetched again only after the server refused the last one (4001): at least two
    # expiries happened during the sends, each followed by a refresh and a resume.
    assert len(minted) >= 3
