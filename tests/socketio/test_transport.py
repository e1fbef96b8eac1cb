"""The Socket.IO transport (``socketio://``) against real servers: Node socket.io 4.8 (with and
without connection state recovery) and python-socketio 5, started on free loopback ports."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_realtime import (
    Acked,
    AuthenticationFailed,
    Connection,
    Gap,
    Message,
    RealtimeConfig,
    Rejected,
    RequestRefused,
    open_realtime,
)
from trio_realtime.transports import binary, from_binary

from .servers import SocketIOServer, open_node_server, open_python_server

CONFIG = RealtimeConfig(
    initial_retry_delay=0.05,
    max_retry_delay=0.3,
    network_monitor=False,
    close_grace_period=2,
    connect_timeout=5,
)


def sio_url(server: SocketIOServer, namespace: str = "/chat", query: str = "") -> str:
    return f"socketio://127.0.0.1:{server.port}{namespace}{query}"


@asynccontextmanager
async def client(
    server: SocketIOServer, journal: Path, *, query: str = "", **kw: Any
) -> AsyncIterator[Connection]:
    async with open_realtime(
        sio_url(server, query=query), journal_dir=journal, config=CONFIG, **kw
    ) as conn:
        yield conn


async def next_items(conn: Connection, count: int, within: float = 20) -> list[Message | Gap]:
    got: list[Message | Gap] = []
    with trio.fail_after(within):
        async with conn.messages() as messages:
            async for item in messages:
                got.append(item)
                if len(got) == count:
                    break
    return got


@pytest.mark.parametrize("kind", ["node", "python"])
async def test_sends_are_acked_and_carry_their_key(kind: str, tmp_path: Path) -> None:
    opener = open_node_server if kind == "node" else open_python_server
    async with opener(tmp_path) as server, client(server, tmp_path / "j") as conn:
        receipts = [await conn.send("room", "chat", {"text": f"hi {n}"}) for n in range(5)]
        with trio.fail_after(20):
            outcomes = [await r.wait() for r in receipts]
        assert outcomes == [Acked(r.seq) for r in receipts]
        logged = server.received()
        assert [line["event"] for line in logged] == ["chat"] * 5
        assert [line["key"] for line in logged] == [r.idempotency_key for r in receipts]
        assert logged[0]["args"] == [
            {
                "channel": "room",
                "idempotency_key": receipts[0].idempotency_key,
                "data": {"text": "hi 0"},
            }
        ]
        assert {line["ns"] for line in logged} == {"/chat"}


@pytest.mark.parametrize("kind", ["node", "python"])
async def test_server_events_and_binary_payloads(kind: str, tmp_path: Path) -> None:
    opener = open_node_server if kind == "node" else open_python_server
    async with opener(tmp_path) as server, client(server, tmp_path / "j") as conn:
        await conn.subscribe("/chat")
        receipt = await conn.send("room", "blob", {"name": "x", "bytes": binary(b"\x00\xffdata")})
        assert await receipt.wait() == Acked(receipt.seq)
        # The server logged real binary (an attachment), and broadcast it back to us.
        (line,) = server.received()
        assert line["args"][0]["data"]["bytes"] == {"_binary_base64": "AP9kYXRh"}
        (echo,) = await next_items(conn, 1)
        assert isinstance(echo, Message)
        assert echo.event == "blob"
        assert echo.channel == "/chat"
        assert echo.idempotency_key == receipt.idempotency_key
        assert from_binary(echo.payload["bytes"]) == b"\x00\xffdata"
        # Events the server emits on its own (without an envelope: the plain payload).
        async with client(server, tmp_path / "k", query="?envelope=0") as raw:
            await raw.send("-", "__emit", {"event": "news", "args": [{"n": 1}], "count": 3})
        news = await next_items(conn, 3)
        # (the server appends {"i": k} to the arguments of its k-th copy)
        assert [(m.event, m.payload) for m in news if isinstance(m, Message)] == [
            ("news", [{"n": 1}, {"i": i}]) for i in range(3)
        ]
        assert [m.offset for m in news if isinstance(m, Message)] == [2, 3, 4]


async def test_a_refused_token_is_authentication_failed(tmp_path: Path) -> None:
    async with open_node_server(tmp_path, token="s3cret") as server:
        with pytest.raises(AuthenticationFailed):
            async with client(server, tmp_path / "j", token="wrong") as conn:
                await conn.wait_connected(timeout=10)
        async with client(server, tmp_path / "k", token="s3cret") as conn:
            await conn.wait_connected(timeout=10)


async def test_a_server_restart_loses_no_acked_event(tmp_path: Path) -> None:
    async with open_node_server(tmp_path) as server, client(server, tmp_path / "j") as conn:
        receipts = []
        for n in range(40):
            receipts.append(await conn.send("room", "n", {"n": n}))
            if n == 15:
                await receipts[5].wait()
                await server.kill()  # SIGKILL mid-stream
                await server.restart()  # same port, same log
            await trio.sleep(0.005)
        with trio.fail_after(30):
            outcomes = [await r.wait() for r in receipts]
        assert all(isinstance(o, Acked) for o in outcomes)
        logged = server.received()
        keys = [line["key"] for line in logged]
        assert set(keys) == {r.idempotency_key for r in receipts}  # none lost
        # Sent twice only when the ack was lost with the server, and then under the same key:
        # the second copy is flagged a duplicate (the server dedups on the key).
        firsts = [line for line in logged if not line["duplicate"]]
        assert [line["key"] for line in firsts] == [r.idempotency_key for r in receipts]


async def test_recovery_after_a_dropped_link(tmp_path: Path) -> None:
    async with (
        open_node_server(tmp_path) as server,
        client(server, tmp_path / "a", query="?envelope=0") as reader,
        client(server, tmp_path / "b", query="?envelope=0") as writer,
    ):
        await reader.subscribe("/chat")
        await writer.send("-", "__emit", {"event": "tick", "args": [{"n": 0}], "count": 1})
        (first,) = await next_items(reader, 1)
        assert isinstance(first, Message)
        # The reader's link is cut by the server; meanwhile the writer has events emitted.
        dropped = await reader.send("-", "__drop", {})
        await dropped.wait()
        await writer.send("-", "__emit", {"event": "tick", "args": [{"n": 1}], "count": 3})
        missed = await next_items(reader, 3)
        assert all(isinstance(m, Message) for m in missed), missed  # recovered: no gap
        assert [m.offset for m in missed] == [2, 3, 4]
        assert reader.metrics.total_reconnects >= 1


@pytest.mark.parametrize("kind", ["node-no-recovery", "python"])
async def test_no_recovery_is_reported_as_a_gap(kind: str, tmp_path: Path) -> None:
    if kind == "python":
        opener = open_python_server(tmp_path)
    else:
        opener = open_node_server(tmp_path, recovery=False)
    async with opener as server, client(server, tmp_path / "a") as reader:
        await reader.subscribe("/chat")
        await reader.send("room", "chat", {"text": "one"})
        (first,) = await next_items(reader, 1)
        assert isinstance(first, Message)
        await server.kill()
        await server.restart()
        await reader.send("room", "chat", {"text": "two"})
        items = await next_items(reader, 2)
        assert isinstance(items[0], Gap)  # recovered: false, never silent
        assert isinstance(items[1], Message)
        assert items[1].payload == {"text": "two"}


async def test_recovery_state_survives_a_restart_of_the_client(tmp_path: Path) -> None:
    journal = tmp_path / "a"
    async with open_node_server(tmp_path) as server:
        async with client(server, journal, query="?envelope=0") as reader:
            await reader.subscribe("/chat")
            async with client(server, tmp_path / "b", query="?envelope=0") as writer:
                await writer.send("-", "__emit", {"event": "tick", "args": [{}], "count": 2})
            await next_items(reader, 2)
        assert os.path.exists(journal / "socketio-state.json")
        async with client(server, tmp_path / "b", query="?envelope=0") as writer:
            await writer.send("-", "__emit", {"event": "tick", "args": [{}], "count": 2})
        async with client(server, journal, query="?envelope=0") as reader:
            missed = await next_items(reader, 3)
        # The last event before the restart was never asked past (not processed): it comes
        # again, then the two emitted while the reader was gone. No gap.
        assert [type(m) for m in missed] == [Message, Message, Message]
        assert [m.offset for m in missed] == [2, 3, 4]


async def test_the_example_client_runs_against_the_node_server(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent.parent / "examples" / "socketio_client.py"
    async with open_node_server(tmp_path) as server:
        env = {**os.environ, "SOCKETIO_URL": sio_url(server)}
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, str(example)], env=env, capture_stdout=True, capture_stderr=True
            )
    out = done.stdout.decode()
    assert "server acked: Acked(" in out
    assert "broadcast: {'text': 'hello from trio'}" in out


async def test_bad_events_are_rejected_and_other_channels_refused(tmp_path: Path) -> None:
    async with open_node_server(tmp_path) as server, client(server, tmp_path / "j") as conn:
        with pytest.raises(RequestRefused):
            await conn.subscribe("room")  # one stream per link: the namespace
        bad = await conn.send("room", "chat", {"blob": {"$binary": "not base64!"}})
        good = await conn.send("room", "chat", {"text": "fine"})
        with trio.fail_after(20):
            assert isinstance(await bad.wait(), Rejected)
            assert await good.wait() == Acked(good.seq)
        assert [line["args"][0]["data"] for line in server.received()] == [{"text": "fine"}]


async def test_the_servers_heartbeat_is_answered(tmp_path: Path) -> None:
    # pings every 0.3 s: unanswered, the server would drop the link within 0.5 s
    fast = ["--ping-interval", "300", "--ping-timeout", "200"]
    async with (
        open_node_server(tmp_path, extra_args=fast) as server,
        client(server, tmp_path / "j") as conn,
    ):
        await conn.wait_connected(timeout=10)
        await trio.sleep(2)  # idle through several pings (the point of the test is the wait)
        receipt = await conn.send("room", "chat", {"text": "still here"})
        with trio.fail_after(10):
            assert await receipt.wait() == Acked(receipt.seq)
        assert conn.metrics.total_reconnects == 0
