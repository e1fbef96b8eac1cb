"""The Socket.IO interop servers and their fixtures work: checked on the wire with a raw Engine.IO v4 /
Socket.IO v5 client written here (python-socketio's own client needs asyncio), and against what
the servers logged.

Wire format reminders (Engine.IO v4 over a WebSocket, one packet per WebSocket message): ``0{..}``
open, ``2``/``3`` ping/pong (the server pings), ``4`` + a Socket.IO packet. A Socket.IO packet is
``<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`` with types 0 CONNECT, 2 EVENT, 3 ACK,
4 CONNECT_ERROR, 5 BINARY_EVENT; each binary attachment follows as a binary WebSocket message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from . import servers
from .servers import ServerFailed, SocketIOServer, open_node_server, open_python_server

TIMEOUT = 10.0  # seconds for any one thing the server should answer

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)


@dataclass
class Packet:
    type: int
    ns: str
    id: int | None
    data: Any
    raw: str  # the Socket.IO part of the text message (without the Engine.IO "4")
    attachments: list[bytes] = field(default_factory=list)

    @property
    def event(self) -> str:
        assert self.type in (EVENT, BINARY_EVENT), self
        return str(self.data[0])

    @property
    def args(self) -> list[Any]:
        return list(self.data[1:])


def parse(text: str) -> tuple[Packet, int]:
    """A Socket.IO packet and how many binary attachments follow it."""
    kind = int(text[0])
    i = 1
    attachments = 0
    if kind in (BINARY_EVENT, BINARY_ACK):
        dash = text.index("-", i)
        attachments = int(text[i:dash])
        i = dash + 1
    ns = "/"
    if text.startswith("/", i):
        comma = text.find(",", i)
        end = len(text) if comma == -1 else comma
        ns = text[i:end]
        i = end + 1
    j = i
    while j < len(text) and text[j].isdigit():
        j += 1
    ack_id = int(text[i:j]) if j > i else None
    data = json.loads(text[j:]) if j < len(text) else None
    return Packet(kind, ns, ack_id, data, text), attachments


def with_attachments(value: Any, buffers: list[bytes]) -> Any:
    if isinstance(value, dict):
        if value.get("_placeholder") is True and isinstance(value.get("num"), int):
            return buffers[value["num"]]
        return {k: with_attachments(v, buffers) for k, v in value.items()}
    if isinstance(value, list):
        return [with_attachments(v, buffers) for v in value]
    return value


class RawClient:
    """One Socket.IO connection to one namespace over a raw Engine.IO v4 WebSocket."""

    def __init__(self, ws: WebSocketConnection, ns: str) -> None:
        self.ws = ws
        self.ns = ns
        self.prefix = "" if ns == "/" else f"{ns},"
        self.open: dict[str, Any] = {}
        self._answer: Packet | None = None
        self.early: list[Packet] = []  # packets that came before the answer (recovered events)
        self.events: list[Packet] = []  # events received and not taken yet
        self.pings = 0
        self._next_id = 1

    @property
    def answer(self) -> Packet:
        """The server's answer to the CONNECT: a CONNECT or a CONNECT_ERROR packet."""
        assert self._answer is not None, "no answer yet"
        return self._answer

    async def message(self) -> str | bytes:
        """The next WebSocket message that is not a ping (pings are answered)."""
        while True:
            message = await self.ws.get_message()
            if message == "2":
                self.pings += 1
                await self.ws.send_message("3")
                continue
            return message

    async def packet(self) -> Packet:
        with trio.fail_after(TIMEOUT):
            message = await self.message()
            assert isinstance(message, str), f"a binary message without its packet: {message!r}"
            assert message.startswith("4"), f"not an Engine.IO message packet: {message!r}"
            packet, count = parse(message[1:])
            for _ in range(count):
                attachment = await self.message()
                assert isinstance(attachment, bytes), attachment
                packet.attachments.append(attachment)
            if count:
                packet.data = with_attachments(packet.data, packet.attachments)
            return packet

    async def handshake(self, auth: dict[str, Any] | None) -> Packet:
        with trio.fail_after(TIMEOUT):
            opening = await self.message()
        assert isinstance(opening, str), opening
        assert opening.startswith("0"), opening
        self.open = json.loads(opening[1:])
        payload = "" if auth is None else json.dumps(auth)
        if self.ns != "/" and payload == "":
            await self.ws.send_message(f"40{self.ns},")
        else:
            await self.ws.send_message(f"40{self.prefix}{payload}")
        while True:
            packet = await self.packet()
            if packet.type in (CONNECT, CONNECT_ERROR):
                assert packet.ns == self.ns, packet
                self._answer = packet
                return packet
            self.early.append(packet)

    async def emit(self, event: str, *args: Any, ack: bool = True) -> int | None:
        """Send an event (with an ack id unless ``ack=False``); bytes arguments go as attachments."""
        ack_id = None
        if ack:
            ack_id = self._next_id
            self._next_id += 1
        buffers: list[bytes] = []

        def placeholders(value: Any) -> Any:
            if isinstance(value, bytes):
                buffers.append(value)
                return {"_placeholder": True, "num": len(buffers) - 1}
            if isinstance(value, dict):
                return {k: placeholders(v) for k, v in value.items()}
            if isinstance(value, list):
                return [placeholders(v) for v in value]
            return value

        body = json.dumps([event, *placeholders(list(args))], separators=(",", ":"))
        head = f"5{len(buffers)}-" if buffers else "2"
        await self.ws.send_message(f"4{head}{self.prefix}{'' if ack_id is None else ack_id}{body}")
        for buffer in buffers:
            await self.ws.send_message(buffer)
        return ack_id

    async def ack(self, ack_id: int | None) -> Packet:
        """Read until the ack ``ack_id`` (events read meanwhile go to ``events``)."""
        assert ack_id is not None
        while True:
            packet = await self.packet()
            if packet.type == ACK and packet.id == ack_id:
                assert packet.ns == self.ns, packet
                return packet
            assert packet.type in (EVENT, BINARY_EVENT), f"unexpected {packet}"
            self.events.append(packet)

    async def call(self, event: str, *args: Any) -> Any:
        """Emit with an ack and return the ack's first argument."""
        answer = await self.ack(await self.emit(event, *args))
        return answer.data[0]

    async def event(self, name: str) -> Packet:
        """The next event called ``name`` (other events are kept in ``events``)."""
        for i, packet in enumerate(self.events):
            if packet.event == name:
                return self.events.pop(i)
        while True:
            packet = await self.packet()
            assert packet.type in (EVENT, BINARY_EVENT), f"unexpected {packet}"
            if packet.event == name:
                return packet
            self.events.append(packet)

    async def heartbeats(self, count: int) -> None:
        """Read until the server has pinged ``count`` times (each answered at once)."""
        with trio.fail_after(TIMEOUT):
            while self.pings < count:
                message = await self.ws.get_message()
                assert message == "2", f"unexpected {message!r}"
                self.pings += 1
                await self.ws.send_message("3")

    async def dropped(self) -> ConnectionClosed:
        """Wait for the server to cut the link; what trio-websocket says about it."""
        with trio.fail_after(TIMEOUT):
            try:
                while True:
                    await self.message()
            except ConnectionClosed as closed:
                return closed


@asynccontextmanager
async def connect(
    server: SocketIOServer, ns: str = "/", auth: dict[str, Any] | None = None, *, ok: bool = True
) -> AsyncIterator[RawClient]:
    """A connected RawClient (``ok=False``: whatever the server answered to the CONNECT)."""
    try:
        async with open_websocket_url(
            server.ws_url, connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT
        ) as ws:
            try:
                client = RawClient(ws, ns)
                answer = await client.handshake(auth)
                if ok:
                    assert answer.type == CONNECT, f"refused: {answer}"
                yield client
            finally:
                with trio.move_on_after(TIMEOUT) as scope:
                    scope.shield = True
                    await ws.aclose()
                # trio-websocket 0.12 can leave the TCP stream open after a close (an abnormal
                # one above all): close it ourselves (as tests/server/_raw.py does).
                await trio.aclose_forcefully(ws._stream)
    except BaseExceptionGroup as group:
        # trio-websocket's nursery wraps what the block raised: show the test's own failure.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def chat(text: str, key: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text}
    if key is not None:
        body["idempotency_key"] = key
    return body


def strip_offset(server: SocketIOServer, recovery: bool, packet: Packet) -> list[Any]:
    """A broadcast's arguments without the offset socket.io appends when it recovers sessions."""
    args = packet.args
    if recovery:
        assert isinstance(args[-1], str), f"no offset on {packet.raw}"
        assert args[-1], f"an empty offset on {packet.raw}"
        return args[:-1]
    return args


def recovers(server: SocketIOServer) -> bool:
    return server.name == "node"


# --- the fixtures themselves ---------------------------------------------------------------


async def test_fixture_gives_a_listening_server(any_server: SocketIOServer, tmp_path: Path) -> None:
    assert any_server.port > 0
    assert any_server.url == f"http://127.0.0.1:{any_server.port}"
    assert any_server.log_path.parent == tmp_path
    assert any_server.received() == []
    async with connect(any_server) as client:
        assert client.open["sid"]
        assert client.open["pingInterval"] == 25000
        assert client.open["pingTimeout"] == 20000
        assert client.open["maxPayload"] > 0
        assert client.open["upgrades"] == []  # already on the WebSocket


async def test_a_server_that_cannot_start_fails_with_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(
        ServerFailed, match=r"(?s)exited before listening.*unknown argument: --bogus"
    ):
        async with open_node_server(tmp_path, extra_args=["--bogus"]):
            pass
    with pytest.raises(ServerFailed, match=r"(?s)exited before listening.*unrecognized arguments"):
        async with open_python_server(tmp_path, extra_args=["--bogus"]):
            pass


async def test_missing_node_modules_fail_and_say_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "EXAMPLES", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="nox -s tests"):
        async with open_node_server(tmp_path):
            pass


async def test_sigterm_stops_the_server_promptly(any_server: SocketIOServer) -> None:
    async with connect(any_server) as client:
        with trio.fail_after(5):
            await any_server.stop()
        assert not any_server.running
        await client.dropped()


# --- events, acks, the log ------------------------------------------------------------------


@pytest.mark.parametrize("ns", ["/", "/chat"])
async def test_ack_log_line_and_broadcast_to_everyone(any_server: SocketIOServer, ns: str) -> None:
    recovery = recovers(any_server)
    async with connect(any_server, ns) as alice, connect(any_server, ns) as bob:
        if recovery:
            assert alice.answer.data["pid"]
        ack_id = await alice.emit("chat", chat("hi", "k1"))
        prefix = "" if ns == "/" else f"{ns},"
        # The ack comes first, then the broadcast, which the sender gets too.
        first = await alice.packet()
        assert first.raw == f'3{prefix}{ack_id}[{{"ok":true,"duplicate":false}}]'
        for client in (alice, bob):
            echo = await client.event("chat")
            assert echo.ns == ns
            assert strip_offset(any_server, recovery, echo) == [
                {"text": "hi", "idempotency_key": "k1"}
            ]
    assert any_server.received() == [
        {
            "ns": ns,
            "event": "chat",
            "args": [{"text": "hi", "idempotency_key": "k1"}],
            "key": "k1",
            "duplicate": False,
        }
    ]


async def test_events_without_a_key_or_an_ack(any_server: SocketIOServer) -> None:
    async with connect(any_server) as client:
        assert await client.call("chat", chat("no key", None), 2) == {
            "ok": True,
            "duplicate": False,
        }
        assert await client.call("chat", chat("no key", None), 2) == {
            "ok": True,
            "duplicate": False,
        }
        await client.emit("note", {"x": 1}, ack=False)
        note = await client.event("note")
        assert strip_offset(any_server, recovers(any_server), note) == [{"x": 1}]
        assert await client.call("end") == {"ok": True, "duplicate": False}
        echoes = [p for p in client.events if p.event == "chat"]
        assert len(echoes) == 2
    logged = any_server.received()
    assert [(e["event"], e["key"], e["duplicate"]) for e in logged] == [
        ("chat", None, False),
        ("chat", None, False),
        ("end", None, False),
    ]  # the event sent without an ack was broadcast, not logged
    assert logged[0]["args"] == [{"text": "no key"}, 2]


async def test_a_duplicate_key_is_flagged_and_not_broadcast(any_server: SocketIOServer) -> None:
    async with connect(any_server, "/chat") as client:
        assert await client.call("chat", chat("one", "k1")) == {"ok": True, "duplicate": False}
        assert await client.call("chat", chat("one again", "k1")) == {"ok": True, "duplicate": True}
        assert await client.call("chat", chat("two", "k2")) == {"ok": True, "duplicate": False}
        # Broadcasts go out in order, after the ack of their event: had the duplicate been
        # broadcast, it would come between these two.
        first, second = await client.event("chat"), await client.event("chat")
        assert first.args[0] == chat("one", "k1")
        assert second.args[0] == chat("two", "k2")
    logged = any_server.received()
    assert [(e["key"], e["duplicate"], e["args"][0]["text"]) for e in logged] == [
        ("k1", False, "one"),
        ("k1", True, "one again"),
        ("k2", False, "two"),
    ]


async def test_keys_in_the_log_are_duplicates_after_a_restart(any_server: SocketIOServer) -> None:
    async with connect(any_server) as client:
        assert await client.call("chat", chat("hi", "k1")) == {"ok": True, "duplicate": False}
    port = any_server.port
    await any_server.kill()
    assert not any_server.running
    await any_server.restart()
    assert any_server.port == port
    async with connect(any_server) as client:
        assert await client.call("chat", chat("hi", "k1")) == {"ok": True, "duplicate": True}
        assert await client.call("chat", chat("new", "k2")) == {"ok": True, "duplicate": False}
    assert [(e["key"], e["duplicate"]) for e in any_server.received()] == [
        ("k1", False),
        ("k1", True),
        ("k2", False),
    ]


async def test_binary_arguments(any_server: SocketIOServer) -> None:
    blob = bytes(range(256)) + b"\x00end"
    recovery = recovers(any_server)
    async with connect(any_server, "/chat") as client:
        # 4 (message) 5 (BINARY_EVENT) 1- (one attachment) /chat, 99 (ack id), then the attachment.
        await client.ws.send_message('451-/chat,99["bin",{"_placeholder":true,"num":0},"tail"]')
        await client.ws.send_message(blob)
        answer = await client.ack(99)
        assert answer.data == [{"ok": True, "duplicate": False}]
        echo = await client.event("bin")
        assert echo.type == BINARY_EVENT
        assert echo.attachments == [blob]
        assert strip_offset(any_server, recovery, echo) == [blob, "tail"]
        # Without an ack id: broadcast, not logged.
        await client.ws.send_message('451-/chat,["bin",{"_placeholder":true,"num":0}]')
        await client.ws.send_message(b"\x01\x02")
        again = await client.event("bin")
        assert again.attachments == [b"\x01\x02"]
        # Nested in an object, through the client's own encoder.
        assert await client.call("blob", {"idempotency_key": "b1", "data": b"\xff"}) == {
            "ok": True,
            "duplicate": False,
        }
    logged = any_server.received()
    assert logged == [
        {
            "ns": "/chat",
            "event": "bin",
            "args": [{"_binary_base64": base64.b64encode(blob).decode()}, "tail"],
            "key": None,
            "duplicate": False,
        },
        {
            "ns": "/chat",
            "event": "blob",
            "args": [{"idempotency_key": "b1", "data": {"_binary_base64": "/w=="}}],
            "key": "b1",
            "duplicate": False,
        },
    ]


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["node", "python"])
async def test_a_wrong_token_is_refused(tmp_path: Path, kind: str) -> None:
    opener = open_node_server if kind == "node" else open_python_server
    async with opener(tmp_path, token="s3cret") as server:
        async with connect(server, "/", {"token": "nope"}, ok=False) as client:
            assert "4" + client.answer.raw == '44{"message":"unauthorized"}'
        async with connect(server, "/chat", None, ok=False) as client:
            assert "4" + client.answer.raw == '44/chat,{"message":"unauthorized"}'
        async with connect(server, "/chat", {"token": "s3cret"}) as client:
            assert client.answer.type == CONNECT
            assert await client.call("chat", chat("in", "k1")) == {"ok": True, "duplicate": False}
        assert [e["key"] for e in server.received()] == ["k1"]


# --- control events, heartbeats -------------------------------------------------------------


async def test_emit_control_event(any_server: SocketIOServer) -> None:
    recovery = recovers(any_server)
    async with connect(any_server, "/chat") as alice, connect(any_server, "/chat") as bob:
        spec = {"event": "news", "args": [{"n": 1}, "x"], "count": 3}
        # The events are sent before the ack, so the asker has them all when the ack comes.
        assert await alice.call("__emit", spec) == {"ok": True}
        got = [p for p in alice.events if p.event == "news"]
        assert [strip_offset(any_server, recovery, p) for p in got] == [
            [{"n": 1}, "x", {"i": k}] for k in range(3)
        ]
        for k in range(3):
            news = await bob.event("news")
            assert strip_offset(any_server, recovery, news) == [{"n": 1}, "x", {"i": k}]
    assert any_server.received() == []  # control events are not logged


@pytest.mark.parametrize(
    ("kind", "interval", "pings"),
    # python-engineio announces whole seconds (it rounds the interval down): 1 s there.
    [("node", 100, 6), ("python", 1000, 3)],
)
async def test_pings_are_answered(tmp_path: Path, kind: str, interval: int, pings: int) -> None:
    opener = open_node_server if kind == "node" else open_python_server
    fast = ["--ping-interval", str(interval), "--ping-timeout", str(interval)]
    async with opener(tmp_path, extra_args=fast) as server, connect(server) as client:
        assert client.open["pingInterval"] == interval
        assert client.open["pingTimeout"] == interval
        # Past the point where a silent client is dropped (interval + timeout): the link lives
        # because the client answers each ping.
        await client.heartbeats(pings)
        assert await client.call("chat", chat("alive", "k1")) == {"ok": True, "duplicate": False}


# --- dropped links and connection state recovery --------------------------------------------


async def drop(client: RawClient) -> None:
    assert await client.call("__drop") == {"ok": True}
    closed = await client.dropped()
    assert closed.reason is not None
    assert closed.reason.code == 1006, closed.reason  # no close frame: the TCP connection ended


async def test_recovery_after_a_drop_delivers_what_was_missed(node_server: SocketIOServer) -> None:
    async with connect(node_server, "/chat") as bob:
        async with connect(node_server, "/chat") as alice:
            session = alice.answer.data
            assert set(session) == {"sid", "pid"}
            assert await alice.call("chat", chat("before", "k1")) == {
                "ok": True,
                "duplicate": False,
            }
            offset = (await alice.event("chat")).args[-1]
            await drop(alice)
        # Alice is away: Bob makes the server broadcast three events.
        assert await bob.call("__emit", {"event": "news", "args": [], "count": 3}) == {"ok": True}
        sent = [p for p in bob.events if p.event == "news"]
        assert len(sent) == 3
        auth = {"pid": session["pid"], "offset": offset}
        async with connect(node_server, "/chat", auth) as alice:
            # Same session: same sid and pid; socket.io 4.8 sends the missed packets first.
            assert alice.answer.data == session
            assert [p.raw for p in alice.early] == [p.raw for p in sent]
            # A retry of the event sent before the drop is a duplicate.
            assert await alice.call("chat", chat("before", "k1")) == {"ok": True, "duplicate": True}
    assert [(e["key"], e["duplicate"]) for e in node_server.received()] == [
        ("k1", False),
        ("k1", True),
    ]


async def test_recovery_skips_the_token_check(tmp_path: Path) -> None:
    async with open_node_server(tmp_path, token="s3cret") as server:
        async with connect(server, "/chat", {"token": "s3cret"}) as alice:
            session = alice.answer.data
            await alice.call("chat", chat("before", "k1"))
            offset = (await alice.event("chat")).args[-1]
            await drop(alice)
        # Recovered: the middlewares (the token check) are skipped.
        async with connect(server, "/chat", {"pid": session["pid"], "offset": offset}) as alice:
            assert alice.answer.data == session
        # Not recovered (an unknown offset): the token is checked.
        auth = {"pid": session["pid"], "offset": "unknown"}
        async with connect(server, "/chat", auth, ok=False) as alice:
            assert alice.answer.type == CONNECT_ERROR
            assert alice.answer.data == {"message": "unauthorized"}


async def test_no_recovery_after_a_restart(node_server: SocketIOServer) -> None:
    async with connect(node_server, "/chat") as alice:
        session = alice.answer.data
        await alice.call("chat", chat("before", "k1"))
        offset = (await alice.event("chat")).args[-1]
        await node_server.restart()  # SIGKILL: the sessions and the packets kept for them are gone
        await alice.dropped()
    async with connect(node_server, "/chat", {"pid": session["pid"], "offset": offset}) as alice:
        assert alice.answer.data["pid"] != session["pid"]
        assert alice.answer.data["sid"] != session["sid"]
        assert alice.early == []


@pytest.mark.parametrize("kind", ["node-no-recovery", "python"])
async def test_servers_without_recovery(tmp_path: Path, kind: str) -> None:
    opened = (
        open_python_server(tmp_path)
        if kind == "python"
        else open_node_server(tmp_path, recovery=False)
    )
    async with opened as server:
        assert server.name == kind
        async with connect(server, "/chat") as bob:
            async with connect(server, "/chat") as alice:
                session = alice.answer.data
                assert set(session) == {"sid"}  # no pid: nothing to recover
                await alice.call("chat", chat("before", "k1"))
                echo = await alice.event("chat")
                assert echo.args == [chat("before", "k1")]  # no offset
                await drop(alice)
            assert await bob.call("__emit", {"event": "news", "count": 2}) == {"ok": True}
            assert len([p for p in bob.events if p.event == "news"]) == 2
            auth = {"pid": "made-up", "offset": "made-up"}
            async with connect(server, "/chat", auth) as alice:
                assert set(alice.answer.data) == {"sid"}
                assert alice.answer.data["sid"] != session["sid"]
                assert alice.early == []
                # Nothing missed comes later either: the first packet is the answer to this call.
                assert await alice.call("chat", chat("after", "k2")) == {
                    "ok": True,
                    "duplicate": False,
                }
                assert [p.event for p in alice.events] == []
