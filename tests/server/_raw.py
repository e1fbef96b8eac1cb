"""A raw client for server tests: the JSON protocol by hand (none of trio_realtime's client code),
so a test can send what a well-behaved client never would, read when it likes (or not at all) and
see every frame and close code the server sends.

It reaches the engine through either front (:func:`open_front`): over WebSocket (trio-websocket, a
real socket, text or binary frames) or over the in-memory transport, the engine serving the other
end directly (``RealtimeServer.handle``; a message is whatever was sent, ``str`` or ``bytes``)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import json
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import trio
import trio_websocket

from trio_realtime.server import AllowAll, Authenticator, RealtimeServer, ServerConfig, Store
from trio_realtime.server import open_server as open_websocket_server
from trio_realtime.testing import open_memory_server
from trio_realtime.transports import LinkClosed, memory_transport_pair

Frame = dict[str, Any]
Front = Literal["memory", "websocket"]
FRONTS: tuple[Front, ...] = ("memory", "websocket")

SUBPROTOCOL = "trio-realtime.v1"
_ids = itertools.count(1)


@dataclass
class RunningServer:
    """A server as the tests see it: its engine (``engine.sessions``, ``engine.store``) and the
    front that serves its connections."""

    front: Front
    engine: RealtimeServer
    connections: trio.Nursery | None = None
    """Memory front: the nursery the engine serves each connection's other end in."""


@asynccontextmanager
async def open_front(
    front: Front,
    store: Store | str,
    authenticator: Authenticator | None = None,
    *,
    config: ServerConfig | None = None,
) -> AsyncIterator[RunningServer]:
    """Run the engine on ``store`` (opened and closed here) behind ``front`` for the block:
    ``"websocket"`` is ``open_server`` on a free port; ``"memory"`` is the engine alone
    (``open_memory_server``), each :func:`connect` a new memory transport pair whose server end
    ``engine.handle`` serves. ``authenticator``: default ``AllowAll``."""
    authenticator = authenticator or AllowAll()
    if front == "websocket":
        async with open_websocket_server(store, authenticator, config=config) as engine:
            yield RunningServer(front, engine)
    else:
        async with (
            open_memory_server(store=store, authenticator=authenticator, config=config) as memory,
            trio.open_nursery() as connections,
        ):
            yield RunningServer(front, memory.server, connections)
            connections.cancel_scope.cancel()


def dumps(message: object) -> str:
    """Compact JSON, non-ASCII characters as themselves (a 4-byte character stays 4 bytes)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def nested(depth: int) -> Any:
    """A JSON value nested ``depth`` arrays deep: ``[[[...]]]``."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def rss() -> int:
    """This process's resident memory in bytes (the server runs in it), after a full collection
    and with what the C allocator holds free given back, so that what is counted is what is held
    (glibc keeps freed blocks: 100 MB of events passed through the server to a reader, all of it
    freed, left 140 MB more RSS behind without the trim, under 10 MB with it)."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _find_malloc_trim()


def presence(channel: str, metadata: object = None, status: str = "online") -> Frame:
    """A presence update frame."""
    return {
        "type": "meta",
        "kind": "presence",
        "channel": channel,
        "status": status,
        "metadata": {} if metadata is None else metadata,
    }


def is_error(code: str, **fields: object) -> Callable[[Frame], bool]:
    def match(frame: Frame) -> bool:
        return (
            frame.get("type") == "error"
            and frame.get("code") == code
            and all(frame.get(k) == v for k, v in fields.items())
        )

    return match


class Link(Protocol):
    """A raw connection's messages, either front: a closed link raises ``LinkClosed``."""

    async def send(self, data: str | bytes) -> None: ...

    async def receive(self) -> str | bytes: ...


class _WebSocketLink:
    """A trio-websocket connection as a :class:`Link`: a ``str`` goes as a text frame, ``bytes``
    as a binary frame (not ``WebSocketTransport``, which sends text only)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, data: str | bytes) -> None:
        try:
            await self.ws.send_message(data)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive(self) -> str | bytes:
        try:
            return await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None


def _closed(exc: trio_websocket.ConnectionClosed) -> LinkClosed:
    if exc.reason is None:
        return LinkClosed(1006)
    return LinkClosed(exc.reason.code, exc.reason.reason or "")


class RawClient:
    """One raw connection. ``frames`` is everything received so far, in order."""

    def __init__(self, link: Link, client_id: str) -> None:
        self.link = link
        self.client_id = client_id
        self.frames: list[Frame] = []
        self.keep_events = True
        """Whether ``frames`` keeps the events received too (a test reading 100 MB of them may
        want the memory back)."""
        self.close_code: int | None = None
        self.close_reason = ""
        self.seq = 0
        self._pending: deque[Frame] = deque()
        self._rids = itertools.count(1)

    # --- sending ---------------------------------------------------------------------------------

    async def send(self, *frames: Frame) -> None:
        """One frame as a message, several as one batch message."""
        await self.send_raw(dumps(frames[0] if len(frames) == 1 else list(frames)))

    async def send_raw(self, message: str | bytes) -> None:
        """Send, as an attacker would: a close already received shows when reading, not here."""
        with contextlib.suppress(LinkClosed):
            await self.link.send(message)

    def event(
        self,
        channel: str = "room",
        payload: object = None,
        *,
        key: str | None = None,
        name: str = "e",
        seq: int | None = None,
    ) -> Frame:
        """The next upstream event (seq one past the last one made, key the client library's)."""
        self.seq = self.seq + 1 if seq is None else seq
        return {
            "type": "event",
            "seq": self.seq,
            "idempotency_key": f"{self.client_id}:{self.seq}" if key is None else key,
            "channel": channel,
            "event": name,
            "payload": {} if payload is None else payload,
            "timestamp": 1,
        }

    def rid(self) -> int:
        return next(self._rids)

    # --- receiving -------------------------------------------------------------------------------

    async def next(self) -> Frame | None:
        """The next frame, or ``None`` once the server closed (``close_code`` says how)."""
        while not self._pending:
            if self.close_code is not None:
                return None
            try:
                data = json.loads(await self.link.receive())
            except LinkClosed as exc:
                self.close_code = 1006 if exc.code is None else exc.code
                self.close_reason = exc.reason
                return None
            received = data if isinstance(data, list) else [data]
            self._pending.extend(received)
            if self.keep_events:
                self.frames.extend(received)
            else:
                self.frames.extend(f for f in received if f.get("type") != "event")
        return self._pending.popleft()

    async def until(self, predicate: Callable[[Frame], bool], *, within: float = 10) -> Frame:
        """Read up to the first frame ``predicate`` accepts; fail if the server closes first."""
        with trio.fail_after(within):
            while True:
                frame = await self.next()
                if frame is None:
                    raise AssertionError(
                        f"closed {self.close_code} before the awaited frame; last frames: "
                        f"{_short(self.frames[-5:])}"
                    )
                if predicate(frame):
                    return frame

    async def closed(self, *, within: float = 10) -> int | None:
        """Read everything up to the server's close; its code."""
        with trio.fail_after(within):
            while await self.next() is not None:
                pass
        return self.close_code

    # --- requests --------------------------------------------------------------------------------

    async def resume(
        self, token: str | None, *, channels: dict[str, dict[str, Any]] | None = None
    ) -> Frame:
        frame: Frame = {
            "type": "resume",
            "protocol": 1,
            "client_id": self.client_id,
            "last_ack_seq": 0,
        }
        if token is not None:
            frame["token"] = token
        if channels is not None:
            frame["channels"] = channels
        await self.send(frame)
        response = await self.until(lambda f: f["type"] in ("resume_response", "error"))
        if response["type"] == "resume_response":
            self.seq = response["ack_seq"]
        return response

    async def publish(self, *events: Frame, within: float = 10) -> Frame:
        """Send ``events`` (a batch if several) and return the ack that covers the last one."""
        await self.send(*events)
        last = events[-1]["seq"]
        return await self.until(
            lambda f: f["type"] == "ack" and f["ack_seq"] >= last, within=within
        )

    async def subscribe(self, channel: str, offset: int | None = None) -> Frame:
        """Subscribe; the answer (``subscribed``, or an ``error`` with the request's rid)."""
        rid = self.rid()
        frame: Frame = {"type": "subscribe", "rid": rid, "channel": channel}
        if offset is not None:
            frame["offset"] = offset
        await self.send(frame)
        return await self.until(
            lambda f: f.get("rid") == rid and f["type"] in ("subscribed", "error")
        )

    async def ping(self, *, within: float = 10) -> None:
        """A round trip: everything sent before it has been processed once the pong is here."""
        t = self.rid()
        await self.send({"type": "ping", "t": t})
        await self.until(lambda f: f["type"] == "pong" and f["t"] == t, within=within)

    def errors(self) -> list[Frame]:
        return [f for f in self.frames if f.get("type") == "error"]


def _short(frames: list[Frame]) -> str:
    text = repr(frames)
    return text if len(text) < 600 else text[:600] + "..."


@asynccontextmanager
async def connect(
    server: RunningServer | RealtimeServer,
    user: str | None = "alice",
    client_id: str | None = None,
    *,
    token: str | None = None,
    resume: bool = True,
    max_message_size: int = 64 * 1024 * 1024,
) -> AsyncIterator[RawClient]:
    """A raw connection through ``server``'s front (a bare ``RealtimeServer`` is one that
    ``open_server`` runs: WebSocket), resumed (token ``token``, else the user name: ``AllowAll``)
    unless ``resume`` is false. ``max_message_size``: WebSocket only (the memory transport takes
    any message)."""
    client_id = client_id or f"raw-{user}-{next(_ids)}"

    async def start(client: RawClient) -> RawClient:
        if resume:
            response = await client.resume(token if token is not None else user)
            assert response["type"] == "resume_response", response
        return client

    if isinstance(server, RunningServer) and server.front == "memory":
        assert server.connections is not None
        client_end, server_end = memory_transport_pair()
        server.connections.start_soon(server.engine.handle, server_end)
        try:
            yield await start(RawClient(client_end, client_id))
        finally:
            await client_end.aclose()
        return
    engine = server.engine if isinstance(server, RunningServer) else server
    url = f"ws://127.0.0.1:{engine.port}/realtime"
    try:
        async with trio_websocket.open_websocket_url(
            url, subprotocols=[SUBPROTOCOL], max_message_size=max_message_size
        ) as ws:
            try:
                yield await start(RawClient(_WebSocketLink(ws), client_id))
            finally:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await ws.aclose()
                # trio-websocket 0.12 can leave the TCP stream open after a close.
                await trio.aclose_forcefully(ws._stream)
    except BaseExceptionGroup as group:
        # trio-websocket's nursery wraps what the block raised: show the test's own failure.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def history(
    server: RunningServer | RealtimeServer,
    channel: str,
    *,
    token: str | None = None,
    within: float = 20,
) -> list[Frame]:
    """Every event a new subscriber replaying ``channel`` from its start receives, up to the head
    the server announced (what the channel holds)."""
    async with connect(server, "history-reader", token=token) as reader:
        answer = await reader.subscribe(channel, offset=0)
        assert answer["type"] == "subscribed", answer
        head = answer["offset"]
        events: list[Frame] = []
        with trio.fail_after(within):
            while head and (not events or events[-1]["offset"] < head):
                frame = await reader.until(
                    lambda f: f["type"] == "event" and f["channel"] == channel
                )
                events.append(frame)
        return events
