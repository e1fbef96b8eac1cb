"""A raw WebSocket client for server tests: trio-websocket speaking the JSON protocol by hand (none
of trio_realtime's client code), so a test can send what a well-behaved client never would, read
when it likes (or not at all) and see every frame and close code the server sends."""

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
from typing import Any

import trio
import trio_websocket

from trio_realtime.server import RealtimeServer

Frame = dict[str, Any]

SUBPROTOCOL = "trio-realtime.v1"
_ids = itertools.count(1)


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


def is_error(code: str, **fields: object) -> Callable[[Frame], bool]:
    def match(frame: Frame) -> bool:
        return (
            frame.get("type") == "error"
            and frame.get("code") == code
            and all(frame.get(k) == v for k, v in fields.items())
        )

    return match


class RawClient:
    """One raw connection. ``frames`` is everything received so far, in order."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, client_id: str) -> None:
        self.ws = ws
        self.client_id = client_id
        self.frames: list[Frame] = []
        self.keep_events = True
        """Whether ``frames`` keeps the events received too (a test reading 100 MB of them may
        want the memory back)."""
        self.close_code: int | None = None
        self.seq = 0
        self._pending: deque[Frame] = deque()
        self._rids = itertools.count(1)

    # --- sending ---------------------------------------------------------------------------------

    async def send(self, *frames: Frame) -> None:
        """One frame as a message, several as one batch message."""
        await self.send_raw(dumps(frames[0] if len(frames) == 1 else list(frames)))

    async def send_raw(self, message: str | bytes) -> None:
        """Send, as an attacker would: a close already received shows when reading, not here."""
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await self.ws.send_message(message)

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
                data = json.loads(await self.ws.get_message())
            except trio_websocket.ConnectionClosed as exc:
                self.close_code = exc.reason.code if exc.reason is not None else 1006
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
    server: RealtimeServer,
    user: str | None = "alice",
    client_id: str | None = None,
    *,
    token: str | None = None,
    resume: bool = True,
    max_message_size: int = 64 * 1024 * 1024,
) -> AsyncIterator[RawClient]:
    """A raw connection, resumed (token ``token``, else the user name: ``AllowAll``) unless
    ``resume`` is false."""
    url = f"ws://127.0.0.1:{server.port}/realtime"
    try:
        async with trio_websocket.open_websocket_url(
            url, subprotocols=[SUBPROTOCOL], max_message_size=max_message_size
        ) as ws:
            client = RawClient(ws, client_id or f"raw-{user}-{next(_ids)}")
            try:
                if resume:
                    response = await client.resume(token if token is not None else user)
                    assert response["type"] == "resume_response", response
                yield client
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
    server: RealtimeServer, channel: str, *, token: str | None = None, within: float = 20
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
