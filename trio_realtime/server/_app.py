"""The reference server: the server side of PROTOCOL.md over any transport, and its WebSocket front."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
import trio_websocket

from .._errors import ConfigError, LocalProtocolError, ProtocolError
from .._protocol import (
    ChannelPosition,
    ChannelResume,
    CloseCode,
    DownstreamEvent,
    DuplicateEvent,
    Error,
    OutOfOrderEvent,
    Ping,
    PresenceUpdate,
    ReadReceipt,
    Receipts,
    ReceiptsQuery,
    Resume,
    ResumeResponse,
    ServerProtocol,
    Subscribe,
    Subscribed,
    Typing,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
    encode_frame,
)
from .._transports import Transport, TransportClosed
from .._transports._websocket import RECEIVE_BUFFER_BYTES, SUBPROTOCOL, WebSocketTransport
from ._auth import Authenticator
from ._meta import PresenceRegistry, TypingRegistry
from ._store import NewEvent, Store, StoredEvent

__all__ = ["RealtimeServer", "ServerConfig", "open_server", "serve"]

logger = logging.getLogger("trio_realtime.server")

#: Messages with events one connection may have waiting for the committer before the server stops
#: reading from it (a bound on memory; within it, reading goes on while a transaction runs).
_MAX_INFLIGHT = 16
#: A batch message the server sends holds at most this many frames and grows past this many bytes
#: by one frame at most (trio-websocket clients refuse messages over 1 MiB by default).
_BATCH_FRAMES = 500
_BATCH_BYTES = 256 * 1024


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Server limits and timings (seconds)."""

    heartbeat_interval: float = 25.0
    """Announced to clients in ``resume_response``."""
    heartbeat_timeout: float = 60.0
    """A connection silent for longer is closed with 4008."""
    handshake_timeout: float = 10.0
    """Time a new connection has to send ``resume`` (slowloris protection)."""
    max_frame_bytes: int = 1024 * 1024
    rate_limit: float = 2000.0
    """Messages per second per connection (bursts up to twice that); beyond: close 4029."""
    send_queue_size: int = 10_000
    """Messages queued for one connection; a subscriber that falls further behind is closed 4029."""
    replay_page: int = 1000
    allowed_origins: frozenset[str] | None = None
    """If set, WebSocket handshakes with an ``Origin`` not listed are closed with 1008."""
    presence_timeout: float = 10.0
    """A user whose every connection to a channel is gone stays present this long (the grace
    period for a reconnect), then leaves."""

    def __attrs_post_init__(self) -> None:
        for name in (
            "heartbeat_interval",
            "heartbeat_timeout",
            "handshake_timeout",
            "rate_limit",
            "presence_timeout",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ConfigError(name, f"must be a positive number, got {value!r}")
        for name in ("max_frame_bytes", "send_queue_size", "replay_page"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")


class _Closing(Exception):
    """End the connection with close ``code``, after sending ``error`` (an encoded frame) once
    the acks of what was received before it are sent."""

    def __init__(self, code: int, reason: str, error: bytes | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.error = error


class _Session:
    """One client connection on the server."""

    def __init__(self, server: RealtimeServer, transport: Transport) -> None:
        self.server = server
        self.transport = transport
        self.proto = ServerProtocol()
        self.user: str | None = None
        self.client_id: str | None = None
        self.channels: set[str] = set()
        self._send, self._receive = trio.open_memory_channel[bytes](server.config.send_queue_size)
        self.close_code: int | None = None
        self.close_reason = ""
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        """Set once the server is done with this connection (it has left ``server.sessions``)."""
        self._tokens = server.config.rate_limit * 2
        self._refilled = trio.current_time()
        self.inflight: deque[_CommitRequest] = deque()
        """Commits asked for by this connection and not yet seen done, oldest first."""
        self.store_failed = False

    def queue(self, data: bytes) -> None:
        """Queue a message for the writer; a subscriber too far behind is closed (4029)."""
        if self.close_code is not None:
            return
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
            self.close(CloseCode.RATE_LIMITED, "too slow: send queue full")
            self.scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def send(self, frame: object) -> None:
        self.queue(self.proto.send(frame))  # type: ignore[arg-type]

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self._send.close()

    def deliver(self, event: StoredEvent) -> None:
        with contextlib.suppress(LocalProtocolError):  # unsubscribed meanwhile
            self.send(_downstream(event))

    def take_token(self) -> bool:
        rate = self.server.config.rate_limit
        now = trio.current_time()
        self._tokens = min(rate * 2, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def deliver_encoded(self, channel: str, data: bytes) -> None:
        """Queue an event already encoded (once, for every subscriber) if still subscribed."""
        if channel in self.proto.subscriptions:
            self.queue(data)

    async def writer(self) -> None:
        """Send what is queued, in order; what queued up while a send ran goes out as one batch
        message (a subscriber of a busy channel gets one WebSocket message per batch, not one
        per event)."""
        receive = self._receive
        try:
            async for data in receive:
                parts = [data]
                size = len(data)
                while size < _BATCH_BYTES and len(parts) < _BATCH_FRAMES:
                    try:
                        data = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    parts.append(data)
                    size += len(data)
                await self.transport.send(parts[0] if len(parts) == 1 else _join(parts))
        except TransportClosed:
            self.scope.cancel()


def _join(messages: list[bytes]) -> bytes:
    """One batch message holding the frames of ``messages`` (each a frame or a batch), in order."""
    frames = [m[1:-1] if m[:1] == b"[" else m for m in messages]
    return b"[" + b",".join(frames) + b"]"


@attrs.define(eq=False)
class _CommitRequest:
    session: _Session
    ack_seq: int
    events: list[NewEvent]
    refusals: list[Error]
    done: trio.Event = attrs.Factory(trio.Event)
    failed: bool = False


def _downstream(event: StoredEvent) -> DownstreamEvent:
    return DownstreamEvent(
        event.channel,
        event.offset,
        event.epoch,
        event.event,
        event.payload,
        event.timestamp,
        event.sender,
        event.idempotency_key,
    )


class RealtimeServer:
    """Serves the protocol over transports handed to :meth:`handle` (see :func:`open_server`)."""

    def __init__(
        self, store: Store, authenticator: Authenticator, config: ServerConfig | None = None
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.config = config or ServerConfig()
        self._subscribers: dict[str, set[_Session]] = {}
        self._fanout = trio.Lock()  # commit+fan-out vs replay+register: no event falls between
        self.sessions: set[_Session] = set()
        self._commit_queue: list[_CommitRequest] = []
        self._commit_wakeup = trio.Event()
        self._committer_running = False
        self.presence = PresenceRegistry(self.config.presence_timeout)
        self._presence_changed = trio.Event()
        self.typing = TypingRegistry()
        self.port: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The server's background tasks (the committer and the presence timer), until cancelled.
        :func:`open_server` runs them; run them yourself when calling :meth:`handle` directly."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.run_committer)
            await nursery.start(self._run_presence_timer)
            task_status.started()

    async def _run_presence_timer(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            deadline = self.presence.next_expiry()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._presence_changed.wait()
            self._presence_changed = trio.Event()
            for diff in self.presence.expire(trio.current_time()):
                self._broadcast(diff.channel, diff)

    def _broadcast(self, channel: str, frame: object, *, skip_user: str | None = None) -> None:
        """Send ``frame`` to every subscriber of ``channel`` (but not to ``skip_user``'s)."""
        for subscriber in list(self._subscribers.get(channel, ())):
            if skip_user is None or subscriber.user != skip_user:
                with contextlib.suppress(LocalProtocolError):  # unsubscribed meanwhile
                    subscriber.send(frame)

    async def handle(self, transport: Transport) -> None:
        """Serve one connection until it closes."""
        session = _Session(self, transport)
        self.sessions.add(session)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.writer)
                with session.scope:
                    try:
                        await self._serve(session)
                    except _Closing as closing:
                        with trio.move_on_after(5):  # bounded by one store transaction
                            for request in session.inflight:
                                await request.done.wait()
                        if closing.error is not None:
                            session.queue(closing.error)
                        session.close(closing.code, closing.reason)
                    except TransportClosed:
                        session.close(1000, "")
                # Closing the queue lets the writer send what is queued (an error frame before the
                # close), but a peer that does not read gets two seconds, not forever.
                session.close(session.close_code or 1000, session.close_reason)
                nursery.cancel_scope.deadline = trio.current_time() + 2
        finally:
            self.sessions.discard(session)
            session.finished.set()
            for channel in session.channels:
                self._subscribers.get(channel, set()).discard(session)
            self.presence.disconnected(session, trio.current_time())
            self._presence_changed.set()
            for channel, user in self.typing.disconnected(session):
                self._broadcast(channel, Typing(channel, False, user), skip_user=user)
            with trio.CancelScope(shield=True):
                await transport.aclose(session.close_code or 1000, session.close_reason)

    async def _receive(self, session: _Session, within: float, code: int) -> bool:
        """Read and decode one message; returns whether it was over ``max_frame_bytes``."""
        with trio.move_on_after(within) as scope:
            data = await session.transport.receive()
        if scope.cancelled_caught:
            raise _Closing(code, "timed out waiting for the client")
        if not session.take_token():
            error = session.proto.send(Error("rate_limited", "too many messages", fatal=True))
            raise _Closing(CloseCode.RATE_LIMITED, "rate limited", error)
        try:
            session.proto.receive_data(data)
        except ProtocolError as exc:
            logger.info("protocol error from %s: %s", session.client_id, exc)
            error = encode_frame(Error("protocol_error", str(exc)[:500], fatal=True))
            raise _Closing(exc.close_code, str(exc)[:120], error) from None
        return len(data) > self.config.max_frame_bytes

    async def _serve(self, session: _Session) -> None:
        config = self.config
        await self._receive(session, config.handshake_timeout, CloseCode.PROTOCOL_ERROR)
        events = list(session.proto.events())
        resume = events[0]
        assert isinstance(resume, Resume)
        user = await self.authenticator.authenticate(resume.token)
        if user is None:
            error = session.proto.send(
                Error("unauthorized", "missing or invalid token", fatal=True)
            )
            raise _Closing(CloseCode.UNAUTHORIZED, "unauthorized", error)
        session.user = user
        session.client_id = resume.client_id
        ack_seq = await self.store.client_ack(resume.client_id)
        answers: dict[str, ChannelResume] = {}
        wanted: dict[str, ChannelPosition] = {}
        for channel, position in resume.channels.items():
            if not await self.authenticator.can_subscribe(user, channel):
                info = await self.store.channel(channel)
                answers[channel] = ChannelResume(info.epoch, info.head, False)
                continue
            info = await self.store.channel(channel)
            recovered = (
                position.epoch in (None, info.epoch)
                and info.first - 1 <= position.offset <= info.head
            )
            answers[channel] = ChannelResume(info.epoch, info.head, recovered)
            wanted[channel] = position if recovered else ChannelPosition(info.head, info.epoch)
        response = ResumeResponse(
            resume.client_id,
            secrets.token_hex(8),
            ack_seq,
            int(config.heartbeat_interval * 1000),
            config.max_frame_bytes,
            int(time.time() * 1000),
            answers,
        )
        session.send(response)
        for channel, position in wanted.items():
            await self._attach(session, channel, position.offset)
        while True:
            oversized = await self._receive(
                session, config.heartbeat_timeout, CloseCode.HEARTBEAT_TIMEOUT
            )
            await self._process(session, oversized)

    async def _attach(self, session: _Session, channel: str, after: int) -> None:
        """Replay ``channel`` after offset ``after`` to ``session`` and subscribe it, atomically
        with respect to publishing (so no event falls between the replay and the live stream)."""
        async with self._fanout:
            while True:
                events = await self.store.read(channel, after, self.config.replay_page)
                for event in events:
                    session.deliver(event)
                if len(events) < self.config.replay_page:
                    break
                after = events[-1].offset
            session.channels.add(channel)
            self._subscribers.setdefault(channel, set()).add(session)
            session.send(self.presence.state(channel))  # full state once, then diffs

    async def _process(self, session: _Session, oversized: bool) -> None:
        proto = session.proto
        accepted: list[NewEvent] = []
        refusals: list[Error] = []  # sent just before the ack, so outcomes arrive in seq order
        pending_ack = False
        assert session.user is not None
        events = list(proto.events())
        if oversized:
            # A single event too large for max_frame_bytes is rejected on its own (its seq is
            # consumed), so the client does not resend it forever; anything else is closed 1009.
            if len(events) == 1 and isinstance(events[0], UpstreamEvent):
                refusals.append(
                    Error("too_large", "event exceeds max_frame_bytes", seq=events[0].seq)
                )
                events = [DuplicateEvent(events[0].seq, events[0].idempotency_key)]
            else:
                error = proto.send(
                    Error("too_large", "message exceeds max_frame_bytes", fatal=True)
                )
                raise _Closing(CloseCode.MESSAGE_TOO_BIG, "message too big", error)
        allowed: dict[str, bool] = {}  # per channel, asked once per message
        for event in events:
            if isinstance(event, UpstreamEvent):
                pending_ack = True
                may = allowed.get(event.channel)
                if may is None:
                    may = await self.authenticator.can_publish(session.user, event.channel)
                    allowed[event.channel] = may
                if not may:
                    refusals.append(
                        Error("forbidden", f"may not publish to {event.channel!r}", seq=event.seq)
                    )
                    continue
                self.typing.stopped(session.user, event.channel)
                accepted.append(
                    NewEvent(
                        event.channel,
                        event.event,
                        event.payload,
                        event.timestamp,
                        session.user,
                        event.idempotency_key,
                        event.seq,
                    )
                )
            elif isinstance(event, DuplicateEvent):
                pending_ack = True
            elif isinstance(event, OutOfOrderEvent):
                error = proto.send(
                    Error(
                        "out_of_order",
                        f"expected seq {event.expected}, got {event.seq}",
                        fatal=True,
                    )
                )
                raise _Closing(CloseCode.PROTOCOL_ERROR, "out of order", error)
            elif isinstance(event, Subscribe):
                await self._subscribe(session, event)
            elif isinstance(event, Unsubscribe):
                session.channels.discard(event.channel)
                self._subscribers.get(event.channel, set()).discard(session)
                session.send(Unsubscribed(event.rid, event.channel))
            elif isinstance(event, Ping):
                session.send(event.response())
            elif isinstance(event, PresenceUpdate | Typing | ReadReceipt | ReceiptsQuery):
                await self._meta(session, event)
        if not pending_ack:
            return
        assert session.client_id is not None
        if not self._committer_running:
            raise RuntimeError("the server's committer is not running (use open_server)")
        request = _CommitRequest(session, proto.received_seq, accepted, refusals)
        self._commit_queue.append(request)
        self._commit_wakeup.set()
        # Keep reading while the committer works (the next messages join its next transaction),
        # but with a bounded number of messages in flight per connection.
        inflight = session.inflight
        inflight.append(request)
        while inflight and (inflight[0].done.is_set() or len(inflight) > _MAX_INFLIGHT):
            await inflight[0].done.wait()
            if inflight.popleft().failed:
                raise _Closing(1011, "store failure")

    async def run_committer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The single writer: commits what all connections received, batched into one store
        transaction, then acks (only after the commit) and fans out, in order."""
        self._committer_running = True
        task_status.started()
        try:
            while True:
                await self._commit_wakeup.wait()
                self._commit_wakeup = trio.Event()
                batch, self._commit_queue = self._commit_queue, []
                with trio.CancelScope(shield=True):  # a taken batch is always finished
                    await self._commit(batch)
        finally:
            self._committer_running = False
            for request in self._commit_queue:
                request.failed = True
                request.done.set()

    async def _commit(self, batch: list[_CommitRequest]) -> None:
        # A connection whose earlier commit failed gets nothing more stored: its later events
        # committed without the failed ones would move its watermark past them, and the client's
        # retransmission of those would then be skipped as already stored.
        for request in batch:
            if request.session.store_failed:
                self._fail_commit(request)
        batch = [request for request in batch if not request.failed]
        if not batch:
            await trio.lowlevel.checkpoint()
            return
        async with self._fanout:
            try:
                results = await self.store.commit_many(
                    [(r.session.client_id or "", r.ack_seq, r.events) for r in batch]
                )
            except Exception:
                logger.exception("store commit failed")
                for request in batch:
                    self._fail_commit(request)
                return
            for request, stored in zip(batch, results, strict=True):
                session = request.session
                for refusal in request.refusals:
                    with contextlib.suppress(LocalProtocolError):  # the session closed meanwhile
                        session.send(refusal)
                with contextlib.suppress(LocalProtocolError):
                    session.queue(session.proto.ack(request.ack_seq))
                for event in stored:
                    if event is None:
                        continue
                    subscribers = self._subscribers.get(event.channel)
                    if subscribers:
                        data = encode_frame(_downstream(event))  # once, for all of them
                        for subscriber in list(subscribers):
                            subscriber.deliver_encoded(event.channel, data)
                request.done.set()

    def _fail_commit(self, request: _CommitRequest) -> None:
        """The events of ``request`` were not stored: close its connection with 1011 (the client
        sends them again on its next one) and refuse every later commit of that connection."""
        session = request.session
        request.failed = True
        request.done.set()
        if not session.store_failed:
            session.store_failed = True
            with contextlib.suppress(LocalProtocolError):
                session.send(Error("internal", "the server could not store the events", fatal=True))
            session.close(1011, "store failure")
            session.scope.cancel()

    async def _meta(
        self, session: _Session, frame: PresenceUpdate | Typing | ReadReceipt | ReceiptsQuery
    ) -> None:
        """Presence, typing and read receipts (PROTOCOL.md section 5): allowed to whoever may
        subscribe to the channel."""
        user = session.user
        assert user is not None
        channel = frame.channel
        if not await self.authenticator.can_subscribe(user, channel):
            rid = frame.rid if isinstance(frame, ReceiptsQuery) else None
            session.send(Error("forbidden", f"may not use {channel!r}", rid=rid))
            return
        if isinstance(frame, PresenceUpdate):
            diff = self.presence.update(session, user, channel, frame.status, frame.metadata)
            if diff is not None:
                self._broadcast(channel, diff)
        elif isinstance(frame, Typing):
            if self.typing.set(session, user, channel, frame.typing):
                self._broadcast(channel, Typing(channel, frame.typing, user), skip_user=user)
        elif isinstance(frame, ReadReceipt):
            info = await self.store.channel(channel)
            if frame.offset > info.head:
                session.send(
                    Error("invalid_receipt", f"{channel!r} has no offset {frame.offset} yet")
                )
            elif await self.store.mark_read(channel, user, frame.offset):
                self._broadcast(channel, ReadReceipt(channel, frame.offset, user))
        else:
            readers = await self.store.receipts(channel)
            session.send(Receipts(frame.rid, channel, readers))

    async def _subscribe(self, session: _Session, request: Subscribe) -> None:
        assert session.user is not None
        if not await self.authenticator.can_subscribe(session.user, request.channel):
            session.send(
                Error("forbidden", f"may not subscribe to {request.channel!r}", rid=request.rid)
            )
            return
        info = await self.store.channel(request.channel)
        if request.offset is None:
            recovered, after = True, info.head
        else:
            recovered = (
                request.epoch in (None, info.epoch)
                and info.first - 1 <= request.offset <= info.head
            )
            after = request.offset if recovered else info.head
        session.send(Subscribed(request.rid, request.channel, info.epoch, info.head, recovered))
        await self._attach(session, request.channel, after)


async def _websocket_handler(
    server: RealtimeServer, request: trio_websocket.WebSocketRequest
) -> None:
    allowed = server.config.allowed_origins
    origin = {k.lower(): v for k, v in request.headers}.get(b"origin")
    try:
        ws = await request.accept(
            subprotocol=SUBPROTOCOL if SUBPROTOCOL in request.proposed_subprotocols else None
        )
    except trio_websocket.ConnectionClosed:
        return  # the peer went away before the handshake's answer
    transport = WebSocketTransport(ws)
    if allowed is not None and (origin is None or origin.decode("latin-1") not in allowed):
        await transport.aclose(CloseCode.POLICY_VIOLATION, "origin not allowed")
        return
    await server.handle(transport)


@asynccontextmanager
async def open_server(
    store: Store,
    authenticator: Authenticator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RealtimeServer]:
    """Run a WebSocket server for the block; ``server.port`` is the port it listens on (``port=0``
    picks a free one). With ``ssl_context`` it serves ``wss://``. The store is closed on exit."""
    server = RealtimeServer(store, authenticator, config)
    try:
        async with trio.open_nursery() as nursery:

            async def handler(request: trio_websocket.WebSocketRequest) -> None:
                try:
                    await _websocket_handler(server, request)
                except Exception:
                    # One connection's failure must never end the server (trio-websocket would
                    # let it cancel every other connection).
                    logger.exception("connection handler failed")

            await nursery.start(server.run)
            ws_server = await nursery.start(
                lambda task_status: trio_websocket.serve_websocket(
                    handler,
                    host,
                    port,
                    ssl_context,
                    # Up to 4x is read, so a lone oversized event is rejected by itself (see
                    # _process); beyond that, trio-websocket closes with 1009.
                    max_message_size=4 * server.config.max_frame_bytes,
                    receive_buffer_size=RECEIVE_BUFFER_BYTES,
                    connect_timeout=server.config.handshake_timeout,
                    disconnect_timeout=2,
                    message_queue_size=64,
                    task_status=task_status,
                )
            )
            server.port = ws_server.port
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


async def serve(
    data_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    config: ServerConfig | None = None,
    task_status: trio.TaskStatus[RealtimeServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the reference server with its default parts until cancelled: a SQLite store and the
    HMAC token authenticator, both kept in ``data_dir``."""
    from ._auth import HmacAuthenticator, load_or_create_secret
    from ._sqlite import SqliteStore

    secret = await trio.to_thread.run_sync(load_or_create_secret, data_dir)
    store = SqliteStore(f"{data_dir}/server.sqlite3")
    await store.open()
    async with open_server(
        store, HmacAuthenticator(secret), host=host, port=port, config=config
    ) as server:
        task_status.started(server)
        await trio.sleep_forever()
