"""The protocol engine: the server side of PROTOCOL.md over any :class:`Transport`.

It knows nothing of WebSocket: a front (``_websocket.py``) accepts connections and hands each one
to :meth:`RealtimeServer.handle` as a transport; tests drive it over the in-memory transport.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._errors import LocalProtocolError, ProtocolError, StoreConflict
from .._protocol import (
    ChannelPosition,
    ChannelResume,
    CloseCode,
    DuplicateEvent,
    Error,
    ErrorCode,
    Message,
    OutOfOrderEvent,
    Ping,
    Resume,
    ResumeResponse,
    ServerProtocol,
    Skip,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
    check_payload,
    encode_frame,
)
from ..transports import LinkClosed, Transport
from ._auth import Action, Authenticator, Identity
from ._config import ServerConfig
from ._handlers import make_handlers
from ._rules import FENCED, Result, Retention
from ._rules import commit as commit_rows
from ._store import (
    ChannelInfo,
    ClientRow,
    ClientUpdate,
    NewEvent,
    Notice,
    SharedStore,
    Store,
    WriteBatch,
    shared_store,
)

logger = logging.getLogger("trio_realtime.server")

#: Messages with events one connection may have waiting for the committer before the server stops
#: reading from it (a bound on memory; within it, reading goes on while a transaction runs).
_MAX_INFLIGHT = 16
#: A batch message the server sends holds at most this many frames and grows past this many bytes
#: by one frame at most (trio-websocket clients refuse messages over 1 MiB by default).
_BATCH_FRAMES = 500
_BATCH_BYTES = 256 * 1024
#: Events the first catch-up read of a connection asks for (before it knows their size).
_FIRST_PAGE = 8
#: Notices (to the other nodes of a shared store) waiting to be published; more are dropped
#: (they are hints: the other nodes poll the store).
_NOTICE_QUEUE = 10_000
#: Notices published in one call at most.
_NOTICE_BATCH = 500
#: Attempts at raising a client's generation before a resume gives up (another node's resumes of
#: the same client_id kept moving the row).
_FENCE_ATTEMPTS = 8


def _utf8_len(text: str | bytes) -> int:
    """Length in UTF-8 bytes (``len`` of a str counts characters: up to 4 bytes each)."""
    if isinstance(text, bytes):
        return len(text)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _name_too_long(name: str, limit: int) -> bool:
    return len(name) * 4 > limit and _utf8_len(name) > limit


class _Closing(Exception):
    """End the connection with close ``code``, after sending ``error`` (an encoded frame) once
    the acks of what was received before it are sent."""

    def __init__(self, code: int, reason: str, error: bytes | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.error = error


def _fatal(code: ErrorCode, message: str, close_code: int, reason: str) -> _Closing:
    return _Closing(close_code, reason, encode_frame(Error(code, message, fatal=True)))


class _Session:
    """One client connection on the server.

    What the server sends it waits in one queue, bounded in bytes, that one writer task drains.
    A channel's events are queued live while the queue has room; past ``send_queue_bytes`` the
    channel is *lagging*: its live events are skipped, and the catch-up task reads them from the
    store once the queue has drained, page by page, then makes the channel live again under the
    server's fan-out lock (so no event falls between the store and the live stream).
    """

    def __init__(self, server: RealtimeServer, transport: Transport) -> None:
        self.server = server
        self.transport = transport
        self.proto = ServerProtocol()
        self.id = secrets.token_hex(12)
        """Unique across server nodes (presence entries in a shared store carry it)."""
        self.identity: Identity | None = None
        self.context: _Context | None = None
        """What handlers see of this connection (once it resumed)."""
        self.client_id: str | None = None
        self.registered: str | None = None
        """The client_id it is registered under in ``RealtimeServer._by_client`` (from the start
        of its resume, before ``client_id`` is set: a resume refused midway is unregistered too)."""
        self.generation: int | None = None
        """The client's generation this connection resumed under (a shared store's fence;
        ``None``: not fenced, one node)."""
        self._out: deque[bytes] = deque()
        self.out_bytes = 0
        self._limit = server.config.send_queue_bytes
        self._more = trio.Event()
        """Set when something is queued (or the queue closes): wakes the writer."""
        self._changed = trio.Event()
        """Set when the queue drained some or a channel started lagging: wakes the catch-up."""
        self.positions: dict[str, int] = {}
        """The channels this connection is fed: the offset of the last event queued (or the
        attach point) of each."""
        self.lagging: dict[str, int] = {}
        """Channels fed from the store, not from memory, with the offset to read after."""
        self.epochs: dict[str, str] = {}
        """The epoch of each channel's log as it was attached: a replay that reads another (the
        store lost its data meanwhile) ends the connection, to resume."""
        self.close_code: int | None = None
        self.close_reason = ""
        self.ending: _Closing | None = None
        """Set (with the scope cancelled) by a task other than the reader that ends the
        connection (token expiry)."""
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        """Set once the server is done with this connection (it has left ``server.sessions``)."""
        self._tokens = server.config.rate_limit * 2
        self._refilled = trio.current_time()
        self.inflight: deque[_CommitRequest] = deque()
        """Commits asked for by this connection and not yet seen done, oldest first."""
        self.store_failed = False
        self._writer_done = trio.Event()
        self._page = min(_FIRST_PAGE, server.config.replay_page)
        """Events the next catch-up read asks for: few at first, then as many as fill half
        the queue at the size of the last page's events."""

    @property
    def user(self) -> str | None:
        return self.identity.user if self.identity is not None else None

    def _wake(self) -> None:
        self._more.set()

    def _lag_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def queue(self, data: bytes, *, answer: bool = True) -> None:
        """Queue a message that must not be skipped (an answer, an ack, an error). A client
        that lets answers pile up past twice ``send_queue_bytes`` is not reading what it asks
        for: closed 4029. (``answer=False``: a presence state sent on going live, which a
        reader that keeps reading may find behind a full queue.)"""
        if self.close_code is not None:
            return
        self._out.append(data)
        self.out_bytes += len(data)
        self._wake()
        if answer and self.out_bytes > 2 * self._limit:
            self.too_slow("send queue full")

    def too_slow(self, reason: str) -> None:
        self._out.clear()
        self.out_bytes = 0
        self.close(CloseCode.RATE_LIMITED, f"too slow: {reason}")
        self.scope.cancel()

    def send(self, frame: object) -> None:
        self.queue(self.proto.send(frame))  # type: ignore[arg-type]

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self._wake()

    def take_token(self) -> bool:
        rate = self.server.config.rate_limit
        now = trio.current_time()
        self._tokens = min(rate * 2, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def deliver_live(self, channel: str, offset: int, data: bytes) -> None:
        """Queue an event already encoded (once, for every subscriber), or, if the queue is full,
        leave it to the store: the channel lags from here."""
        if self._queue_live(channel, data):
            self.positions[channel] = offset

    def deliver_after(self, channel: str, offset: int, data: bytes) -> None:
        """:meth:`deliver_live` if the connection has not been fed ``offset`` yet (a shared
        store: it may have read it from the store, past what this node fanned out)."""
        position = self.positions.get(channel)
        if position is not None and offset > position:
            self.deliver_live(channel, offset, data)

    def deliver_meta(self, channel: str, data: bytes) -> None:
        """Queue a presence, typing or receipt frame about ``channel``. A lagging channel skips
        them: it gets the full presence state when it is live again."""
        self._queue_live(channel, data)

    def _queue_live(self, channel: str, data: bytes) -> bool:
        """Queue ``data`` for a live channel if the queue has room (else the channel starts
        lagging); returns whether it was queued."""
        if channel in self.lagging or channel not in self.positions or self.close_code is not None:
            return False
        if self.out_bytes + len(data) > self._limit:
            self.start_lagging(channel)
            return False
        self._out.append(data)
        self.out_bytes += len(data)
        self._wake()
        return True

    def start_lagging(self, channel: str) -> None:
        self.lagging[channel] = self.positions[channel]
        self._lag_changed()

    def attach(self, channel: str, after: int, head: int) -> bool:
        """Start feeding ``channel`` after offset ``after`` (the head is ``head``); called under
        the server's fan-out lock. Returns whether it is live at once (else the catch-up task
        replays it from the store first)."""
        self.positions[channel] = after
        if after < head:
            self.lagging[channel] = after
            self._lag_changed()
            return False
        self.lagging.pop(channel, None)
        return True

    async def send_attached(self, channel: str) -> None:
        """``channel`` is live for this connection: what the handlers send then (the presence
        state), queued even behind a full queue (a reader that keeps reading gets it)."""
        for handler in self.server.handlers:
            frame = await handler.attached(channel)
            if frame is not None and channel in self.positions:  # not unsubscribed meanwhile
                with contextlib.suppress(LocalProtocolError):
                    self.queue(self.proto.send(frame), answer=False)  # type: ignore[arg-type]

    def detach(self, channel: str) -> None:
        self.positions.pop(channel, None)
        self.lagging.pop(channel, None)
        self.epochs.pop(channel, None)

    async def writer(self) -> None:
        """Send what is queued, in order; what queued up while a send ran goes out as one batch
        message (a subscriber of a busy channel gets one WebSocket message per batch, not one
        per event). A send that does not complete within ``max_lag`` ends the connection."""
        out = self._out
        max_lag = self.server.config.max_lag
        try:
            while True:
                while not out:
                    if self.close_code is not None:
                        return
                    await self._more.wait()
                    self._more = trio.Event()
                parts = [out.popleft()]
                size = len(parts[0])
                while out and size < _BATCH_BYTES and len(parts) < _BATCH_FRAMES:
                    data = out.popleft()
                    parts.append(data)
                    size += len(data)
                self.out_bytes -= size
                with trio.move_on_after(max_lag) as waited:
                    await self.transport.send(parts[0] if len(parts) == 1 else _join(parts))
                if waited.cancelled_caught:
                    self.too_slow(f"nothing accepted for {max_lag:g} s")
                    return
                self._lag_changed()
        except LinkClosed:
            self.scope.cancel()
        finally:
            self._writer_done.set()

    async def finished_writing(self) -> None:
        await self._writer_done.wait()

    async def catch_up(self) -> None:
        """Feed lagging channels from the store, a page at a time and in turn, whenever the queue
        is at most half full; a channel that reached the head goes live again."""
        try:
            while True:
                while not self.lagging or self.out_bytes > self._limit // 2:
                    if self.close_code is not None:
                        return
                    await self._changed.wait()
                if self.close_code is not None or self.ending is not None:
                    return
                await self._catch_up_page()
        except Exception:
            # A store that fails to read: this connection cannot be fed; the client resumes.
            logger.exception("reading the store for a subscriber failed")
            with contextlib.suppress(LocalProtocolError):
                self.send(
                    Error(ErrorCode.INTERNAL, "the server could not read the channel", fatal=True)
                )
            self.close(CloseCode.INTERNAL_ERROR, "store failure")
            self.scope.cancel()

    async def _catch_up_page(self) -> None:
        """One page of the first lagging channel (what it read is dropped on return, so no page
        is held while the queue drains)."""
        server = self.server
        channel, after = next(iter(self.lagging.items()))
        if not await self._replay_page(channel, after):
            return  # more to read, after the queue drained (or unsubscribed meanwhile)
        # As far as the store had: go live under the fan-out lock (no commit can land between
        # the last read and the switch).
        async with server._fanout:
            position = self.lagging.get(channel)
            if position is None or not await self._replay_page(channel, position):
                return
            if self.close_code is None:
                del self.lagging[channel]
                await self.send_attached(channel)

    async def _replay_page(self, channel: str, after: int) -> bool:
        """Queue the page of ``channel`` after ``after``; returns whether that reached the end
        of what the store holds (a short page, queued whole)."""
        page = self._page  # _queue_replay sizes the next page: compare with this one's size
        events = await self.server.store.read(channel, after, page)
        if self.lagging.get(channel) != after:
            return False  # unsubscribed (or subscribed again) meanwhile
        if not events:
            return True
        if after and events[0].epoch != self.epochs.get(channel, events[0].epoch):
            # Not the log this connection was fed from (the store lost its data): it resumes,
            # and its resume answers recovered: false. (The channel stays lagging: nothing more
            # of it is queued.)
            self.ending = self.ending or _Closing(
                CloseCode.GOING_AWAY, "the channel's log was reset: resume"
            )
            self.scope.cancel()
            return False
        return self._queue_replay(channel, events) and len(events) < page

    def _queue_replay(self, channel: str, events: list[Message]) -> bool:
        """Queue ``events`` of a lagging channel while the queue has room (one at least), and
        size the next page by them; returns whether all of them were queued. The channel goes
        to the back of the line, so that lagging channels are served in turn."""
        if self.close_code is not None:
            self.lagging.clear()
            return False
        queued = 0
        size = 0
        for event in events:
            data = encode_frame(event)
            size += len(data)
            if queued and self.out_bytes + len(data) > self._limit:
                break
            self._out.append(data)
            self.out_bytes += len(data)
            queued += 1
        # A page fills at most half the queue: events may be up to max_frame_bytes each.
        average = size / (queued + (queued < len(events)))
        self._page = max(1, min(self.server.config.replay_page, int(self._limit / 2 / average)))
        del self.lagging[channel]
        self.positions[channel] = self.lagging[channel] = events[queued - 1].offset
        self._wake()
        return queued == len(events)


class _Context:
    """A connection as its meta frames' handlers see it (``_handlers.MetaContext``)."""

    def __init__(self, server: RealtimeServer, session: _Session, identity: Identity) -> None:
        self._server = server
        self._session = session
        self.identity = identity

    @property
    def connection_id(self) -> str:
        return self._session.id

    @property
    def config(self) -> ServerConfig:
        return self._server.config

    @property
    def store(self) -> Store:
        return self._server.store

    def send(self, frame: object) -> None:
        with contextlib.suppress(LocalProtocolError):  # e.g. the connection closed meanwhile
            self._session.send(frame)

    def broadcast(self, channel: str, frame: object, *, skip_user: str | None = None) -> None:
        self._server.broadcast(channel, frame, skip_user=skip_user)

    async def authorize(self, action: Action, channel: str) -> bool:
        return await self._server.authenticator.authorize(self.identity, action, channel)


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


def _recoverable(info: ChannelInfo, offset: int, epoch: str | None) -> bool:
    """Whether a client at ``offset`` of ``epoch`` can be replayed what it missed: same epoch,
    and nothing it lacks dropped by retention."""
    return epoch in (None, info.epoch) and info.first - 1 <= offset <= info.head


class RealtimeServer:
    """Serves the protocol over transports handed to :meth:`handle` (see :func:`open_server`)."""

    def __init__(
        self,
        store: Store,
        authenticator: Authenticator,
        config: ServerConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.config = config or ServerConfig()
        self.node = secrets.token_hex(8)
        """This server's id among the nodes of a shared store."""
        self.shared: SharedStore | None = shared_store(store)
        """The store, if several nodes share it (``_store.SharedStore``): then this node also
        fans out what the others store, fences resumes and leases its presence entries."""
        self._wall_clock = wall_clock
        self._fanned: dict[str, int] = {}
        """Shared store: per channel with local subscribers, the offset fanned out up to."""
        self._fanned_epoch: dict[str, str] = {}
        """Shared store: the epoch of the channel's log that :attr:`_fanned` counts in (a store
        that lost its data starts the channel again under another: see :meth:`_check_reset`)."""
        self._dirty: set[str] = set()
        """Shared store: channels another node stored events in, to read and fan out."""
        self._dirty_event = trio.Event()
        self._meta_in: deque[Notice] = deque(maxlen=_NOTICE_QUEUE)
        """Shared store: meta frames from other nodes, delivered under the fan-out lock (so
        none falls between a subscriber's presence state and its going live)."""
        self._notices, self._notices_out = trio.open_memory_channel[Notice](_NOTICE_QUEUE)
        self._subscribers: dict[str, set[_Session]] = {}
        self._fanout = trio.Lock()  # commit+fan-out vs replay+register: no event falls between
        self.sessions: set[_Session] = set()
        self._by_client: dict[str, set[_Session]] = {}
        """The sessions of each client_id (those that resumed), for a resume to find its older
        links without a scan of every session."""
        self._commit_queue: list[_CommitRequest] = []
        self._commit_wakeup = trio.Event()
        self._committer_running = False
        self.port: int | None = None
        self.handlers = make_handlers(self)
        """The server halves of the services (``_handlers.py``), by the frames they handle."""
        self._handler_of = {kind: h for h in self.handlers for kind in h.frames}
        hooks = (getattr(handler, "heard", None) for handler in self.handlers)
        self._heard: list[Callable[[str, bytes], None]] = [h for h in hooks if callable(h)]
        missed = (getattr(handler, "missed", None) for handler in self.handlers)
        self._missed: list[Callable[[], None]] = [m for m in missed if callable(m)]
        """The handlers' optional ``heard`` hooks (shared store: another node's meta frames, as
        delivered to this node's subscribers) and ``missed`` ones (this node watches the others'
        notices again after a failure: it may have missed some)."""
        config = self.config
        self._retention = Retention(
            count=config.retention_count,
            age=config.retention_age,
            dedup_window=config.dedup_window,
        )
        self._next_key_purge = 0.0

    async def drop_connections(self) -> None:
        """Drop every open connection at once (its client sees 1006 and reconnects), including
        those that arrive meanwhile: how a server stops without giving each connection the time a
        close handshake may take (once the server's readers are cancelled, none can complete)."""
        dropped: set[_Session] = set()
        while fresh := [session for session in self.sessions if session not in dropped]:
            for session in fresh:
                dropped.add(session)
                await session.transport.abort()

    def wall_time(self) -> float:
        """Unix seconds, as this server stamps what it shares with other nodes (a test under
        ``MockClock`` gives the server a ``wall_clock`` that follows it)."""
        return self._wall_clock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The server's background tasks (the committer, the handlers', and with a shared store
        those that follow the other nodes), until cancelled. :func:`open_server` runs them; run
        them yourself when calling :meth:`handle` directly."""
        async with trio.open_nursery() as nursery:
            if self.shared is not None:
                nursery.start_soon(self._publish_notices, self.shared)
                await nursery.start(self._follow, self.shared)
                nursery.start_soon(self._pull_dirty)
                nursery.start_soon(self._poll)
            await nursery.start(self.run_committer)
            for handler in self.handlers:
                await nursery.start(handler.run)
            task_status.started()

    def broadcast(
        self, channel: str, frame: object, *, skip_user: str | None = None, local: bool = False
    ) -> None:
        """Send ``frame`` to every subscriber of ``channel`` (but not to ``skip_user``'s), those
        of the other nodes of a shared store included (``local``: this node's only)."""
        subscribers = self._subscribers.get(channel)
        if not subscribers and (self.shared is None or local):
            return
        data = encode_frame(frame)  # type: ignore[arg-type]  # once, for all of them
        if subscribers:
            self._deliver_meta(channel, data, skip_user)
        if self.shared is not None and not local:
            self._notify(Notice(self.node, channel, meta=data, skip_user=skip_user))

    def has_subscribers(self, channel: str) -> bool:
        """Whether connections to this node are subscribed to ``channel``."""
        return bool(self._subscribers.get(channel))

    def _deliver_meta(self, channel: str, data: bytes, skip_user: str | None) -> None:
        for subscriber in list(self._subscribers.get(channel, ())):
            if skip_user is None or subscriber.user != skip_user:
                subscriber.deliver_meta(channel, data)

    # The multi-node path (a shared store): none of it runs for a store of one node's own.

    def _notify(self, notice: Notice) -> None:
        """Tell the other nodes (a hint: dropped if too many wait, they poll the store)."""
        with contextlib.suppress(trio.WouldBlock):
            self._notices.send_nowait(notice)

    async def _publish_notices(self, shared: SharedStore) -> None:
        receive = self._notices_out
        async for first in receive:
            notices = [first]
            with contextlib.suppress(trio.WouldBlock):
                while len(notices) < _NOTICE_BATCH:
                    notices.append(receive.receive_nowait())
            try:
                await shared.publish(notices)
            except Exception:
                logger.exception("publishing notices to the other nodes failed")

    async def _follow(
        self, shared: SharedStore, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """What the other nodes say: meta frames to this node's subscribers, and channels whose
        head moved (read from the store and fanned out by :meth:`_pull_dirty`)."""
        started = False
        while True:
            try:
                async with shared.watch() as notices:
                    if not started:
                        started = True
                        task_status.started()
                    else:  # notices may have been missed while not watching
                        self._mark_dirty(self._fanned)
                        for missed in self._missed:
                            missed()
                    async for notice in notices:
                        if notice.node == self.node:
                            continue
                        if notice.meta is not None and notice.channel in self._subscribers:
                            self._meta_in.append(notice)
                            self._dirty_event.set()
                        fanned = self._fanned.get(notice.channel)
                        if notice.head and fanned is not None and notice.head > fanned:
                            self._mark_dirty((notice.channel,))
            except Exception:
                logger.exception("following the other nodes failed: again in a second")
            if not started:
                started = True
                task_status.started()
            await trio.sleep(1)

    def _mark_dirty(self, channels: Any) -> None:
        self._dirty.update(channels)
        self._dirty_event.set()

    async def _pull_dirty(self) -> None:
        """Fan out the meta frames of other nodes, and what they stored in the channels marked
        dirty."""
        meta = self._meta_in
        while True:
            await self._dirty_event.wait()
            self._dirty_event = trio.Event()
            dirty, self._dirty = self._dirty, set()
            try:
                async with self._fanout:
                    while meta:
                        notice = meta.popleft()
                        assert notice.meta is not None
                        self._deliver_meta(notice.channel, notice.meta, notice.skip_user)
                        for heard in self._heard:
                            heard(notice.channel, notice.meta)
                    for channel in dirty:
                        if channel in self._fanned:
                            await self._pull(channel)
            except Exception:
                logger.exception("reading what other nodes stored failed (polled again)")

    async def _poll(self) -> None:
        """The safety net for lost notices: every ``node_poll_interval``, the heads of the
        channels this node feeds, and those that moved are read."""
        while True:
            await trio.sleep(self.config.node_poll_interval)
            channels = tuple(self._fanned)
            if not channels:
                continue
            try:
                rows = await self.store.load(channels=channels)
            except Exception:
                logger.exception("polling the shared store failed")
                continue
            moved = []
            for name in channels:
                fanned = self._fanned.get(name)
                if fanned is None:
                    continue
                info = rows.channel(name)
                if self._was_reset(name, info.epoch, info.head):
                    async with self._fanout:
                        await self._check_reset(name)
                elif info.head > fanned:
                    moved.append(name)
            if moved:
                self._mark_dirty(moved)

    async def _pull(self, channel: str, until: int | None = None) -> None:
        """Under the fan-out lock: read ``channel`` from the store after the offset this node
        fanned out, up to ``until`` (default: its end), and fan it out."""
        page = self.config.replay_page
        while (fanned := self._fanned.get(channel)) is not None and (
            until is None or fanned < until
        ):
            limit = page if until is None else min(page, until - fanned)
            events = await self.store.read(channel, fanned, limit)
            if not events:
                return
            if events[0].epoch != self._fanned_epoch.get(channel, events[0].epoch):
                await self._check_reset(channel)  # the store lost the log this node fanned
                if events[0].epoch != self._fanned_epoch.get(channel):
                    return
                continue  # from where this node is now
            for event in events:
                self._fan(channel, event.offset, encode_frame(event))
            if len(events) < limit:
                return

    def _fan(self, channel: str, offset: int, data: bytes) -> None:
        """Feed an event of ``channel`` to this node's subscribers that lack it (shared store)."""
        subscribers = self._subscribers.get(channel)
        if not subscribers or self._fanned.get(channel, offset) >= offset:
            return
        for subscriber in list(subscribers):
            subscriber.deliver_after(channel, offset, data)
        self._fanned[channel] = offset

    async def _fan_out_shared(self, stored: list[Message | None]) -> None:
        """A local commit's events, under the fan-out lock: first what other nodes stored before
        them that this node has not fanned out yet, so every subscriber gets offsets in order.
        (If that read fails, the channel is left to :meth:`_pull_dirty`, which reads these
        events from the store too: late, never out of order.)"""
        failed: set[str] = set()
        for event in stored:
            if event is None or event.channel in failed:
                continue
            channel = event.channel
            if event.epoch != self._fanned_epoch.get(channel, event.epoch):
                await self._check_reset(channel)  # the store lost the log this node fanned
            fanned = self._fanned.get(channel)
            if fanned is None or event.offset <= fanned:
                continue
            if event.offset > fanned + 1:
                try:
                    await self._pull(channel, until=event.offset - 1)
                except Exception:
                    logger.exception("reading what other nodes stored failed (read again)")
                    failed.add(channel)
                    self._mark_dirty((channel,))
                    continue
            self._fan(channel, event.offset, encode_frame(event))

    def _was_reset(self, channel: str, epoch: str, head: int) -> bool:
        """Whether the store's row of ``channel`` (``epoch``, ``head``) is not the log this node
        fanned out: another epoch, or a head below what it fanned (the store lost data: Redis
        flushed, restarted without its AOF, failed over to a replica that lacked the last
        writes). A channel fanned up to 0 has nothing to lose: it only takes the epoch."""
        fanned = self._fanned.get(channel)
        if fanned is None:
            return False
        if fanned == 0:
            self._fanned_epoch[channel] = epoch
            return False
        return head < fanned or epoch != self._fanned_epoch.get(channel, epoch)

    async def _check_reset(self, channel: str, info: ChannelInfo | None = None) -> None:
        """Under the fan-out lock: if the store's log of ``channel`` is not the one this node
        fanned out (:meth:`_was_reset`), its offsets start again: this node's subscribers of it
        are closed 1001, to resume (their positions are of the lost log: the resume answers
        ``recovered: false`` and the head, and they go on from there), and this node fans out
        from the new head. ``info``: the channel's row if the caller just read it under the
        lock."""
        if info is None:
            info = await self._channel_info(channel)
        if not self._was_reset(channel, info.epoch, info.head):
            return
        subscribers = self._subscribers.get(channel, set())
        logger.warning(
            "channel %.40r: the store's log is not the one fanned out (epoch %s head %d, fanned "
            "%s up to %d): the store lost data; %d subscribers on this node resume",
            channel,
            info.epoch,
            info.head,
            self._fanned_epoch.get(channel),
            self._fanned.get(channel, 0),
            len(subscribers),
        )
        for session in list(subscribers):
            session.ending = session.ending or _Closing(
                CloseCode.GOING_AWAY, "the channel's log was reset: resume"
            )
            session.scope.cancel()
        self._fanned[channel] = info.head
        self._fanned_epoch[channel] = info.epoch

    async def _fence(self, client_id: str, user: str) -> int | None:
        """Shared store: raise the client's generation (so that connections that resumed it
        before, on any node, can store nothing more), bind the client_id to ``user`` if it is
        not bound yet, and return the generation; ``None`` if the client_id belongs to another
        user (refused by the caller)."""
        for attempt in range(_FENCE_ATTEMPTS):
            if attempt:
                await trio.sleep(random.uniform(0, 0.005 * attempt))
            row = (await self.store.load(clients=(client_id,))).clients.get(client_id)
            if row is not None and row.owner not in (None, user):
                return None
            # Bound to ``user`` now, not at its first commit: another user resuming the same
            # client_id meanwhile (on any node) is refused, instead of fencing this one out.
            after = (
                ClientRow(user, 0, 1)
                if row is None
                else attrs.evolve(row, owner=user, generation=row.generation + 1)
            )
            try:
                batch = WriteBatch(time.time(), clients=(ClientUpdate(client_id, row, after),))
                await self.store.write(batch)
            except StoreConflict:
                continue
            return after.generation
        raise StoreConflict(f"client {client_id!r} kept moving through {_FENCE_ATTEMPTS} resumes")

    async def handle(self, transport: Transport) -> None:
        """Serve one connection until it closes."""
        session = _Session(self, transport)
        self.sessions.add(session)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.writer)
                nursery.start_soon(session.catch_up)
                closing: _Closing | None = None
                with session.scope:
                    try:
                        await self._serve(session, nursery)
                    except _Closing as exc:
                        closing = exc
                    except LinkClosed:
                        session.close(1000, "")
                    except Exception:
                        # A store (or authenticator) that failed: this connection only.
                        logger.exception("serving a connection failed")
                        closing = _fatal(
                            ErrorCode.INTERNAL,
                            "the server failed",
                            CloseCode.INTERNAL_ERROR,
                            "internal error",
                        )
                closing = closing or session.ending
                if closing is not None:
                    with trio.move_on_after(5):  # bounded by one store transaction
                        for request in session.inflight:
                            await request.done.wait()
                    if closing.error is not None:
                        session.queue(closing.error)
                    session.close(closing.code, closing.reason)
                # Closing the queue lets the writer send what is queued (an error frame before the
                # close), but a peer that does not read gets two seconds, not forever.
                session.close(session.close_code or 1000, session.close_reason)
                nursery.cancel_scope.deadline = trio.current_time() + 2
                await session.finished_writing()
                nursery.cancel_scope.cancel()
        finally:
            self.sessions.discard(session)
            if session.registered is not None:
                same = self._by_client[session.registered]
                same.discard(session)
                if not same:
                    del self._by_client[session.registered]
            session.finished.set()
            if session.identity is not None:
                logger.info(
                    "%.40s disconnected (client %.40s, close %s%s)",
                    session.identity.user,
                    session.client_id,
                    session.close_code or 1000,
                    f": {session.close_reason}" if session.close_reason else "",
                )
            for channel in list(session.positions):
                self._detach(session, channel)
            if session.context is not None:
                for handler in self.handlers:
                    handler.disconnected(session.context)
            with trio.CancelScope(shield=True):
                await transport.aclose(session.close_code or 1000, session.close_reason)

    def _detach(self, session: _Session, channel: str) -> None:
        """Stop feeding ``channel`` to ``session``."""
        session.detach(channel)
        subscribers = self._subscribers.get(channel)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._subscribers[channel]
                self._fanned.pop(channel, None)
                self._fanned_epoch.pop(channel, None)

    async def _receive(self, session: _Session, within: float, code: int) -> bool:
        """Read and decode one message; returns whether it was over ``max_frame_bytes``."""
        with trio.move_on_after(within) as scope:
            data = await session.transport.receive()
        if scope.cancelled_caught:
            raise _Closing(code, "timed out waiting for the client")
        if not session.take_token():
            error = session.proto.send(
                Error(ErrorCode.RATE_LIMITED, "too many messages", fatal=True)
            )
            raise _Closing(CloseCode.RATE_LIMITED, "rate limited", error)
        limit = self.config.max_frame_bytes
        # A message of fewer characters than a quarter of the limit is within it in any encoding.
        oversized = len(data) * 4 > limit and _utf8_len(data) > limit
        try:
            session.proto.receive_data(data)
        except ProtocolError as exc:
            logger.info("protocol error from %s: %s", session.client_id, exc)
            error = encode_frame(Error(ErrorCode.PROTOCOL_ERROR, str(exc)[:500], fatal=True))
            raise _Closing(exc.close_code, str(exc)[:120], error) from None
        return oversized

    async def _serve(self, session: _Session, nursery: trio.Nursery) -> None:
        config = self.config
        await self._receive(session, config.handshake_timeout, CloseCode.PROTOCOL_ERROR)
        events = list(session.proto.events())
        resume = events[0]
        assert isinstance(resume, Resume)
        identity = await self.authenticator.authenticate(resume.token)
        if identity is None:
            logger.warning(
                "refused a token (client %.40r): unknown, expired or made with another secret; "
                "closed 4001",
                resume.client_id,
            )
            raise _fatal(
                ErrorCode.UNAUTHORIZED,
                "missing or invalid token",
                CloseCode.UNAUTHORIZED,
                "unauthorized",
            )
        limit = config.max_name_bytes
        too_long = [name for name in resume.channels if _name_too_long(name, limit)]
        if _name_too_long(resume.client_id, limit) or too_long:
            raise _fatal(
                ErrorCode.PROTOCOL_ERROR,
                f"a client_id or channel name is over {limit} bytes",
                CloseCode.PROTOCOL_ERROR,
                "name too long",
            )
        if len(resume.channels) > config.max_subscriptions:
            raise _fatal(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {config.max_subscriptions} channels per connection",
                CloseCode.FORBIDDEN,
                "too many subscriptions",
            )
        await self._replace_older(session, resume.client_id, identity.user)
        if self.shared is not None:
            # Before reading the watermark: no older connection of the client, on any node, can
            # move it after this (the rules refuse their commits), so the answer is final.
            session.generation = await self._fence(resume.client_id, identity.user)
        rows = await self.store.load(clients=(resume.client_id,), channels=tuple(resume.channels))
        client = rows.clients.get(resume.client_id)
        if client is not None and client.owner not in (None, identity.user):
            logger.warning(
                "user %.40r resumed client_id %.40r of another user",
                identity.user,
                resume.client_id,
            )
            raise _fatal(
                ErrorCode.CLIENT_ID_TAKEN,
                "this client_id belongs to another user",
                CloseCode.FORBIDDEN,
                "client_id taken",
            )
        session.identity = identity
        session.client_id = resume.client_id
        session.context = _Context(self, session, identity)
        logger.info("%.40s connected (client %.40s)", identity.user, resume.client_id)
        if identity.expires_at is not None:
            nursery.start_soon(self._expire, session, identity.expires_at)
        ack_seq = client.ack_seq if client is not None else 0
        answers: dict[str, ChannelResume] = {}
        wanted: dict[str, ChannelPosition] = {}
        for channel, position in resume.channels.items():
            info = rows.channel(channel)
            if not await self.authenticator.authorize(identity, Action.SUBSCRIBE, channel):
                answers[channel] = ChannelResume(info.epoch, info.head, False)
                continue
            recovered = _recoverable(info, position.offset, position.epoch)
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

    async def _replace_older(self, session: _Session, client_id: str, user: str) -> None:
        """End this server's older connections of ``client_id`` (a link the client gave up on,
        which the server has not seen drop yet) and wait for their commits, so that the
        watermark the resume reads is final: no event received by an older link is stored after
        it. The client relies on that to decide, for an event it withdrew after sending it,
        whether the server has it (the resume's ``ack_seq`` says so, once and for all)."""
        older = [
            other
            for other in self._by_client.get(client_id, ())
            if other is not session and other.user == user
        ]
        for other in older:
            other.ending = other.ending or _Closing(
                CloseCode.GOING_AWAY, "replaced by a newer connection of this client"
            )
            other.scope.cancel()
        # No time limit: a commit is one store transaction, shielded, and a committer that
        # stops marks what it had as failed (done). Answering before would not be final.
        for other in older:
            while pending := [r for r in other.inflight if not r.done.is_set()]:
                await pending[0].done.wait()
        self._by_client.setdefault(client_id, set()).add(session)
        session.registered = client_id
        await trio.lowlevel.checkpoint()

    async def _channel_info(self, channel: str) -> ChannelInfo:
        return (await self.store.load(channels=(channel,))).channel(channel)

    async def _expire(self, session: _Session, expires_at: float) -> None:
        """At the token's expiry, end the connection with 4001: the client refreshes its token
        and resumes (nothing is lost: what it sent is acked or sent again)."""
        await trio.sleep(max(0.0, expires_at - time.time()))
        session.ending = _fatal(
            ErrorCode.TOKEN_EXPIRED, "the token expired", CloseCode.UNAUTHORIZED, "token expired"
        )
        session.scope.cancel()

    async def _attach(self, session: _Session, channel: str, after: int) -> None:
        """Subscribe ``session`` to ``channel`` from offset ``after``: what it missed is replayed
        from the store by its catch-up task, then it is fed live, atomically with respect to
        publishing (so no event falls between the replay and the live stream)."""
        async with self._fanout:
            info = await self._channel_info(channel)
            if self.shared is not None and self._was_reset(channel, info.epoch, info.head):
                await self._check_reset(channel, info)
            live = session.attach(channel, after, info.head)
            session.epochs[channel] = info.epoch
            self._subscribers.setdefault(channel, set()).add(session)
            if self.shared is not None and channel not in self._fanned:
                self._fanned[channel] = info.head
                self._fanned_epoch[channel] = info.epoch
            if live:
                await session.send_attached(channel)  # the full presence state once, then diffs

    def _check_event(self, event: UpstreamEvent) -> Error | None:
        """Refuse an event no store or encoder could take (checked here, at the edge, so that it
        never fails a commit shared with others)."""
        limit = self.config.max_name_bytes
        for field, name in (
            ("channel", event.channel),
            ("event", event.event),
            ("idempotency_key", event.idempotency_key),
        ):
            if _name_too_long(name, limit):
                message = f"{field} is over {limit} bytes"
                return Error(ErrorCode.INVALID_NAME, message, seq=event.seq)
        reason = check_payload(event.payload, max_depth=self.config.max_payload_depth)
        if reason is not None:
            return Error(ErrorCode.INVALID_PAYLOAD, reason, seq=event.seq)
        return None

    async def _process(self, session: _Session, oversized: bool) -> None:
        proto = session.proto
        accepted: list[NewEvent] = []
        refusals: list[Error] = []  # sent just before the ack, so outcomes arrive in seq order
        pending_ack = False
        identity = session.identity
        assert identity is not None
        user = identity.user
        events = list(proto.events())
        if oversized:
            # A single event too large for max_frame_bytes is rejected on its own (its seq is
            # consumed), so the client does not resend it forever; anything else is closed 1009.
            if len(events) == 1 and isinstance(events[0], UpstreamEvent):
                refusals.append(
                    Error(ErrorCode.TOO_LARGE, "event exceeds max_frame_bytes", seq=events[0].seq)
                )
                events = [DuplicateEvent(events[0].seq, events[0].idempotency_key)]
            else:
                error = proto.send(
                    Error(ErrorCode.TOO_LARGE, "message exceeds max_frame_bytes", fatal=True)
                )
                raise _Closing(CloseCode.MESSAGE_TOO_BIG, "message too big", error)
        allowed: dict[str, bool] = {}  # per channel, asked once per message
        for event in events:
            if isinstance(event, UpstreamEvent):
                pending_ack = True
                refusal = self._check_event(event)
                if refusal is not None:
                    refusals.append(refusal)
                    continue
                may = allowed.get(event.channel)
                if may is None:
                    may = await self.authenticator.authorize(
                        identity, Action.PUBLISH, event.channel
                    )
                    allowed[event.channel] = may
                    if may:  # typing stops when its user publishes: once per channel
                        for handler in self.handlers:
                            handler.published(user, event.channel)
                if not may:
                    refusals.append(
                        Error(
                            ErrorCode.FORBIDDEN,
                            f"may not publish to {event.channel!r}",
                            seq=event.seq,
                        )
                    )
                    continue
                accepted.append(
                    NewEvent(
                        event.channel,
                        event.event,
                        event.payload,
                        event.timestamp,
                        user,
                        event.idempotency_key,
                        event.seq,
                    )
                )
            elif isinstance(event, DuplicateEvent | Skip):
                pending_ack = True  # a skip stores nothing: its seq is consumed
            elif isinstance(event, OutOfOrderEvent):
                error = proto.send(
                    Error(
                        ErrorCode.OUT_OF_ORDER,
                        f"expected seq {event.expected}, got {event.seq}",
                        fatal=True,
                    )
                )
                raise _Closing(CloseCode.PROTOCOL_ERROR, "out of order", error)
            elif isinstance(event, Subscribe):
                await self._subscribe(session, event)
            elif isinstance(event, Unsubscribe):
                self._detach(session, event.channel)
                session.send(Unsubscribed(event.rid, event.channel))
            elif isinstance(event, Ping):
                session.send(event.response())
            elif type(event) in self._handler_of:
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
                raise _Closing(CloseCode.INTERNAL_ERROR, "store failure")

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

    async def _commit_rows(self, batch: list[_CommitRequest]) -> list[Result]:
        """Store the requests of ``batch`` in one atomic write, under the rules (``_rules.py``)."""
        now = time.time()
        forget_keys = now >= self._next_key_purge  # a scan of the keys: once a minute is enough
        if forget_keys:
            self._next_key_purge = now + 60
        return await commit_rows(
            self.store,
            [(r.session.client_id or "", r.session.user, r.ack_seq, r.events) for r in batch],
            retention=self._retention,
            now=now,
            forget_keys=forget_keys,
            generations=(None if self.shared is None else [r.session.generation for r in batch]),
        )

    async def _store_batch(
        self, batch: list[_CommitRequest]
    ) -> tuple[list[tuple[_CommitRequest, list[Message | None]]], list[_CommitRequest]]:
        """Commit ``batch`` in one transaction; if that fails, request by request, so that a
        failure stays with the connection that caused it. Returns what was stored, and the
        requests that failed (with every later one of their connections): a store failure, or
        a client_id that belongs to another user."""
        try:
            results = await self._commit_rows(batch)
        except StoreConflict:
            # Contention with other writers through every attempt: not any request's fault,
            # and committing them one by one would only contend more. The clients send again.
            logger.warning("the store's rows kept moving: a commit was given up")
            return [], batch
        except Exception:
            if len(batch) == 1:
                logger.exception("store commit failed")
                return [], batch
            logger.warning("a shared store commit failed: committing request by request")
        else:
            return self._sort_results(batch, results)
        done: list[tuple[_CommitRequest, list[Message | None]]] = []
        failed: list[_CommitRequest] = []
        failing: set[_Session] = set()
        for request in batch:
            if request.session in failing:
                failed.append(request)
                continue
            try:
                (stored,) = await self._commit_rows([request])
            except Exception:
                logger.exception("store commit failed")
                stored = None
            if stored is FENCED:
                self._fence_out(request)
            if stored is None or stored is FENCED:
                failing.add(request.session)
                failed.append(request)
            else:
                done.append((request, stored))
        return done, failed

    def _sort_results(
        self, batch: list[_CommitRequest], results: list[Result]
    ) -> tuple[list[tuple[_CommitRequest, list[Message | None]]], list[_CommitRequest]]:
        done = []
        failed = []
        refused: set[_Session] = set()
        for request, stored in zip(batch, results, strict=True):
            if stored is FENCED:
                self._fence_out(request)
                refused.add(request.session)
                failed.append(request)
            elif stored is None or request.session in refused:
                # Its client_id belongs to another user (or it was fenced): the connection's
                # later requests go too (whatever they hold: a watermark moved by one of them
                # would be a loss).
                if request.session not in refused:
                    logger.warning("a commit for a client_id of another user was refused")
                refused.add(request.session)
                failed.append(request)
            else:
                done.append((request, stored))
        return done, failed

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
        heads: dict[str, int] = {}  # shared store: the channels' heads, for the other nodes
        async with self._fanout:
            done, failed = await self._store_batch(batch)
            for request, stored in done:
                session = request.session
                for refusal in request.refusals:
                    with contextlib.suppress(LocalProtocolError):  # the session closed meanwhile
                        session.send(refusal)
                for new, event in zip(request.events, stored, strict=True):
                    if event is None and new.seq is not None:
                        # Stored already (by another connection of the client, or under the
                        # same caller key): the ack says so.
                        with contextlib.suppress(LocalProtocolError):
                            session.proto.mark_duplicate(new.seq)
                with contextlib.suppress(LocalProtocolError):
                    session.queue(session.proto.ack(request.ack_seq))
                if self.shared is not None:
                    await self._fan_out_shared(stored)
                    heads.update((e.channel, e.offset) for e in stored if e is not None)
                else:
                    for event in stored:
                        if event is None:
                            continue
                        subscribers = self._subscribers.get(event.channel)
                        if subscribers:
                            data = encode_frame(event)  # once, for all of them
                            for subscriber in list(subscribers):
                                subscriber.deliver_live(event.channel, event.offset, data)
                request.done.set()
            # After the outcomes of what was stored, so that those reach their clients first.
            for request in failed:
                self._fail_commit(request)
        for channel, head in heads.items():
            self._notify(Notice(self.node, channel, head))

    def _fence_out(self, request: _CommitRequest) -> None:
        """``request`` was refused by the fence: its client resumed again since, maybe on another
        node. Its connection is one the client gave up on: closed (1001), nothing more stored."""
        session = request.session
        logger.info("a commit of a connection replaced on another node was refused")
        session.store_failed = True
        session.close(CloseCode.GOING_AWAY, "replaced by a newer connection of this client")
        session.scope.cancel()

    def _fail_commit(self, request: _CommitRequest) -> None:
        """The events of ``request`` were not stored: close its connection with 1011 (the client
        sends them again on its next one) and refuse every later commit of that connection."""
        session = request.session
        request.failed = True
        request.done.set()
        if not session.store_failed:
            session.store_failed = True
            with contextlib.suppress(LocalProtocolError):
                session.send(
                    Error(ErrorCode.INTERNAL, "the server could not store the events", fatal=True)
                )
            session.close(CloseCode.INTERNAL_ERROR, "store failure")
            session.scope.cancel()

    async def _meta(self, session: _Session, frame: Any) -> None:
        """A meta frame (PROTOCOL.md section 5), to the handler of its kind: allowed to whoever
        may subscribe to the channel."""
        context = session.context
        assert context is not None
        channel = frame.channel
        rid = getattr(frame, "rid", None)
        if self._refuse_name(session, channel, rid):
            return
        if not await context.authorize(Action.SUBSCRIBE, channel):
            session.send(Error(ErrorCode.FORBIDDEN, f"may not use {channel!r}", rid=rid))
            return
        await self._handler_of[type(frame)].handle(context, frame)

    def _refuse_name(self, session: _Session, channel: str, rid: int | None) -> bool:
        """Refuse a request about a channel whose name is over ``max_name_bytes``."""
        limit = self.config.max_name_bytes
        if not _name_too_long(channel, limit):
            return False
        session.send(Error(ErrorCode.INVALID_NAME, f"channel name is over {limit} bytes", rid=rid))
        return True

    async def _subscribe(self, session: _Session, request: Subscribe) -> None:
        identity = session.identity
        assert identity is not None
        config = self.config
        if self._refuse_name(session, request.channel, request.rid):
            return
        resubscribe = request.channel in session.positions
        if not resubscribe and len(session.positions) >= config.max_subscriptions:
            message = f"at most {config.max_subscriptions} subscriptions per connection"
            session.send(Error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, message, rid=request.rid))
            return
        if not await self.authenticator.authorize(identity, Action.SUBSCRIBE, request.channel):
            session.send(
                Error(
                    ErrorCode.FORBIDDEN,
                    f"may not subscribe to {request.channel!r}",
                    rid=request.rid,
                )
            )
            return
        info = await self._channel_info(request.channel)
        if request.offset is None:
            recovered, after = True, info.head
        else:
            recovered = _recoverable(info, request.offset, request.epoch)
            after = request.offset if recovered else info.head
        if resubscribe:
            # Stop the live feed first: an event fanned out after ``subscribed`` and before
            # the replay would arrive ahead of older ones.
            self._detach(session, request.channel)
        session.send(Subscribed(request.rid, request.channel, info.epoch, info.head, recovered))
        await self._attach(session, request.channel, after)
