"""Read receipts: a monotonic watermark, relayed to subscribers, persisted by the server."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from trio_realtime import ReceiptUpdate, RequestRefused, open_realtime
from trio_realtime.server import (
    Action,
    AllowAll,
    Identity,
    RealtimeServer,
    SqliteStore,
    open_server,
)

from .conftest import MEMORY, next_item


class NoSecrets(AllowAll):
    """Everyone may use every channel but "secret"."""

    async def authorize(self, identity: Identity, action: Action, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        return action is not Action.SUBSCRIBE or channel != "secret"


@asynccontextmanager
async def server_at(data: Path, port: int = 0) -> AsyncIterator[RealtimeServer]:
    store = SqliteStore(os.fspath(data / "server.sqlite3"))
    async with open_server(store, NoSecrets(), port=port) as server:
        yield server


def url(server: RealtimeServer) -> str:
    return f"ws://127.0.0.1:{server.port}/realtime"


async def test_watermark_is_monotonic_relayed_and_survives_a_server_restart(
    tmp_path: Path,
) -> None:
    async with server_at(tmp_path) as server:
        port = server.port
        async with (
            open_realtime(url(server), config=MEMORY, token="alice") as alice,
            open_realtime(url(server), config=MEMORY, token="bob") as bob,
        ):
            await bob.subscribe("room")
            receipts = bob.receipts.changes("room")
            await alice.send_many("room", "chat", [f"m{i}" for i in range(10)])
            await alice.drain()

            await alice.receipts.mark_read("room", 5)
            assert await next_item(receipts) == ReceiptUpdate("room", "alice", 5)
            await alice.receipts.mark_read("room", 3)  # backwards: nothing sent, nothing moves
            await alice.receipts.mark_read("room", 7)
            assert await next_item(receipts) == ReceiptUpdate("room", "alice", 7)
            assert alice.receipts.watermark("room") == 7

            assert bob.receipts.has_user_read("room", 7, "alice")
            assert not bob.receipts.has_user_read("room", 8, "alice")
            assert await bob.receipts.get_receipts("room", 7) == {"alice"}
            assert await bob.receipts.get_receipts("room", 8) == set()
            await bob.receipts.mark_read("room", 10)
            # mark_read returns once queued; bob's own relayed receipt says the server has it.
            assert await next_item(receipts) == ReceiptUpdate("room", "bob", 10)
            assert await alice.receipts.get_receipts("room", 6) == {"alice", "bob"}
            assert alice.receipts.has_user_read("room", 10, "bob")
    # The server restarts on the same data: the watermarks are still there.
    async with (
        server_at(tmp_path, port=port) as server,
        open_realtime(url(server), config=MEMORY, token="carol") as carol,
    ):
        assert await carol.receipts.get_receipts("room", 1) == {"alice", "bob"}
        assert await carol.receipts.get_receipts("room", 8) == {"bob"}
        assert carol.receipts.has_user_read("room", 7, "alice")


async def test_mark_read_while_offline_is_sent_after_resume(tmp_path: Path) -> None:
    async with server_at(tmp_path) as server:
        port = server.port
        async with open_realtime(url(server), config=MEMORY, token="alice") as alice:
            await alice.send_many("room", "chat", [1, 2, 3])
            await alice.drain()
    # The server is down while carol reads the room.
    async with open_realtime(
        f"ws://127.0.0.1:{port}/realtime", config=MEMORY, token="carol"
    ) as carol:
        assert carol.state.value == "reconnecting"
        await carol.receipts.mark_read("room", 3)
        async with (
            server_at(tmp_path, port=port) as server,
            open_realtime(url(server), config=MEMORY, token="bob") as bob,
        ):
            await bob.subscribe("room")
            receipts = bob.receipts.changes("room")
            # Carol reconnects on her own and re-sends her watermark after the resume.
            assert await next_item(receipts) == ReceiptUpdate("room", "carol", 3)
            assert await bob.receipts.get_receipts("room", 3) == {"carol"}


class Logged(logging.Handler):
    """Sets ``seen`` when a record containing ``text`` is logged (from the trio thread)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_receipts_beyond_the_head_forbidden_channels_and_bad_arguments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_realtime")
    refused = Logged("invalid_receipt")
    logging.getLogger("trio_realtime").addHandler(refused)
    async with (
        server_at(tmp_path) as server,
        open_realtime(url(server), config=MEMORY, token="alice") as alice,
    ):
        await alice.send("room", "chat", "only one")
        await alice.drain()
        await alice.receipts.mark_read("room", 5)  # the channel's head is 1
        try:
            with trio.fail_after(10):
                await refused.seen.wait()  # the server refused it; the client logs the error
        finally:
            logging.getLogger("trio_realtime").removeHandler(refused)
        assert await alice.receipts.get_receipts("room", 1) == set()
        with pytest.raises(RequestRefused) as info:
            await alice.receipts.get_receipts("secret", 1)
        assert info.value.code == "forbidden"
        with pytest.raises(ValueError, match="offset"):
            await alice.receipts.mark_read("room", -1)
        with pytest.raises(ValueError, match="offset"):
            alice.receipts.has_user_read("room", True, "bob")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="channel"):
            await alice.receipts.get_receipts("", 1)
