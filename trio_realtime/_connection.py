"""The client connection: ``open_realtime`` / ``connect_realtime`` and :class:`Connection`.

A :class:`Connection` is a supervisor task that owns the journal and, for each link to the server,
a link nursery with three tasks: the reader (the only task reading), the writer (the only task
writing) and the heartbeat. When the link dies its nursery is cancelled as a whole and the
supervisor reconnects after the backoff delay; the resume handshake then restores both directions
and the writer retransmits what the server lacks, in order.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

import attrs
import trio

from ._backoff import Backoff
from ._config import RealtimeConfig
from ._errors import (
    JournalClosed,
    JournalError,
    ProtocolError,
    RealtimeBrokenError,
    RealtimeClosedError,
    RequestRefused,
)
from ._journal import Journal, open_journal
from ._outbox import Outbox, Outcome, Receipt
from ._protocol import (
    Ack,
    ChannelGap,
    ChannelPosition,
    ClientFrame,
    ClientProtocol,
    CloseAction,
    CloseCode,
    DownstreamEvent,
    Error,
    Ping,
    Receipts,
    ReceiptsQuery,
    Resume,
    ResumeResponse,
    ServerFrame,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    close_action,
    fatal_close_code,
)
from ._transports import Connector, Transport, TransportClosed, connect_websocket

if TYPE_CHECKING:
    from .services import PresenceService, ReceiptsService, TypingService

__all__ = [
    "AuthDelegate",
    "AuthenticationFailed",
    "Connection",
    "ConnectionFailed",
    "ConnectionState",
    "Gap",
    "Message",
    "Metrics",
    "Service",
    "Stream",
]

logger = logging.getLogger("trio_realtime")

#: Events kept for a later messages() iterator while none is running.
_BACKLOG_LIMIT = 10_000

#: Bytes a batch may use; the server's max_frame_bytes minus room for the array brackets.
_BATCH_OVERHEAD = 16


class ConnectionState(enum.StrEnum):
    CONNECTING = "connecting"
    """The first connection attempt is under way."""
    CONNECTED = "connected"
    """Resumed: events flow both ways."""
    RECONNECTING = "reconnecting"
    """The link was lost (or an attempt failed); waiting for the backoff or reconnecting."""
    FAILED = "failed"
    """Gave up: retries exhausted, or the server refused in a way retrying cannot fix."""
    CLOSED = "closed"
    """Closed by the application."""


@attrs.frozen
class Metrics:
    """A snapshot of a connection's counters (``conn.metrics``). Counts are since this
    :class:`Connection` started; times are in seconds."""

    total_reconnects: int
    total_messages_sent: int
    """Events accepted by ``send``/``send_many`` (journaled) by this process."""
    total_messages_acked: int
    current_queue_size: int
    """Events waiting for an ack (including those recovered from the journal)."""
    outbox_bytes: int
    """Memory the waiting events hold: their frames plus a fixed bookkeeping cost each (what
    ``max_outbox_bytes`` limits)."""
    average_reconnect_time: float | None
    """Mean time from losing a link to being connected again (``None``: no reconnect yet)."""
    ack_latency_p50: float | None
    """Median time from ``send`` returning to the server's ack, over the last 1,024 acks."""
    ack_latency_p99: float | None
    replayed: int
    """Events transmitted again: after a reconnect, or recovered from the journal at start."""
    duplicates: int
    """Acks that said the server already had the event (a retransmission it had stored)."""
    rejected: int
    """Events the server refused for good (``Rejected`` outcomes)."""
    state: str

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


class ConnectionFailed(RealtimeBrokenError):
    """The connection reached the ``failed`` state.

    Attributes:
        code: the last close code, if the server sent one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class AuthenticationFailed(ConnectionFailed):
    """The server kept refusing the token (close 4001): there was no auth delegate to refresh
    it, the delegate failed, or ``max_auth_failures`` refreshed tokens were refused in a row."""


class AuthDelegate(Protocol):
    """Supplies tokens for the handshake (see :class:`trio_realtime.CachedAuth`).

    ``get_token`` is asked before each connection attempt; ``refresh_token`` after the server
    refused the current token (close 4001) and ``get_token`` still returns that same token."""

    async def get_token(self) -> str: ...

    async def refresh_token(self) -> str: ...


@attrs.frozen
class Message:
    """An event of a channel, delivered once per connection (duplicates by offset are dropped)."""

    channel: str
    offset: int
    epoch: str
    event: str
    payload: Any
    sender: str | None
    timestamp: int
    idempotency_key: str | None


@attrs.frozen
class Gap:
    """Events of ``channel`` were lost to this client (the server no longer had them): offsets
    ``first_missing`` to ``last_missing`` (``None``: unknown) of ``epoch``. Resync from your source
    of truth; it is never silent."""

    channel: str
    epoch: str
    first_missing: int
    last_missing: int | None


_T = TypeVar("_T")


@attrs.define(eq=False)
class _Listener:
    """One ``messages()`` iterator: the channel it wants (None: all) and what it was given."""

    channel: str | None
    send: trio.MemorySendChannel[Message | Gap]
    given: dict[str, tuple[str, int]] = attrs.Factory(dict)  # channel -> (epoch, last offset)

    def has(self, message: Message) -> bool:
        last = self.given.get(message.channel)
        return last is not None and last[0] == message.epoch and message.offset <= last[1]


class Stream(Generic[_T]):
    """An async iterator over a connection's messages or states (``async for x in stream``).

    Not an async generator, so leaving a loop early needs no ``aclosing``: the stream stops
    receiving as soon as it is closed (``aclose()``, ``async with``) or garbage collected.
    """

    def __init__(
        self,
        receive: trio.MemoryReceiveChannel[_T],
        first: list[_T],
        on_next: Callable[[_T], Awaitable[None]] | None = None,
        on_commit: Callable[[_T], Awaitable[None]] | None = None,
    ) -> None:
        self._receive = receive
        self._first = first
        self._on_next = on_next
        self._on_commit = on_commit or on_next
        self._taken: _T | None = None

    def __aiter__(self) -> Stream[_T]:
        return self

    async def __anext__(self) -> _T:
        if self._taken is not None and self._on_next is not None:
            # Asking for the next item means the one taken before is processed.
            taken, self._taken = self._taken, None
            await self._on_next(taken)
        if self._first:
            await trio.lowlevel.checkpoint()
            item = self._first.pop(0)
        else:
            try:
                item = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StopAsyncIteration from None
        self._taken = item
        return item

    async def commit(self) -> None:
        """Say the item taken last is processed now, without asking for the next one (for
        ``messages()`` streams this persists the channel position at once: do it before a
        planned shutdown so the last message is not delivered again by the next process)."""
        if self._taken is not None and self._on_commit is not None:
            taken, self._taken = self._taken, None
            await self._on_commit(taken)
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self._receive.aclose()

    async def __aenter__(self) -> Stream[_T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self._receive.close()


class Service:
    """A feature that runs beside a :class:`Connection` (presence, typing, receipts, ...).

    The connection creates one of each of its services, runs :meth:`run` in its own nursery (so
    a service is cancelled with the connection), routes the server frames listed in ``frames``
    to :meth:`on_frame`, and calls the other hooks. Hooks run in the connection's reader or in
    the caller of ``send``: they must not block.
    """

    name: ClassVar[str] = ""
    """The attribute under which the connection offers the service (``conn.presence``)."""
    frames: ClassVar[tuple[type, ...]] = ()
    """Server frame types this service handles."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def run(self) -> None:
        """Background work, until the connection closes (cancelled then)."""
        await trio.lowlevel.checkpoint()

    def on_frame(self, frame: ServerFrame) -> None:
        """One of ``frames`` arrived."""

    def on_resumed(self) -> None:
        """A link was (re)established: queue what the server must hear again (it forgets
        presence, typing and pending receipts of a connection that went away)."""

    def on_message(self, message: Message) -> None:
        """An event of a subscribed channel arrived (before it is handed to ``messages()``)."""

    def on_send(self, channel: str) -> None:
        """The application sent an event to ``channel``."""

    def close(self) -> None:
        """The connection closed: end the service's iterators."""


class _LinkDown(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class _Link:
    """One connection's tasks share this: the transport, the protocol, and how it ended."""

    def __init__(
        self, transport: Transport, proto: ClientProtocol, scope: trio.CancelScope
    ) -> None:
        self.transport = transport
        self.proto = proto
        self.scope = scope
        self.down: _LinkDown | None = None
        self.last_received = trio.current_time()
        self.max_frame_bytes = 1 << 20

    def fail(self, code: int | None, reason: str) -> None:
        if self.down is None:
            self.down = _LinkDown(code, reason)
        self.scope.cancel()


def _default_journal_dir(url: str) -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[-1]).strip("_") or "default"
    return os.path.join(base, "trio-realtime", "journals", name)


class Connection:
    """A durable connection to a trio_realtime server. Get one from :func:`open_realtime` or
    :func:`connect_realtime`."""

    def __init__(
        self,
        url: str,
        *,
        config: RealtimeConfig,
        journal_dir: str | os.PathLike[str] | None,
        token: str | None,
        auth: AuthDelegate | None,
        connector: Connector | None,
        services: Sequence[Callable[[Connection], Service]] = (),
    ) -> None:
        if not isinstance(url, str) or not re.match(r"^wss?://", url):
            raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
        if config.use_tls and url.startswith("ws://"):
            url = "wss://" + url[len("ws://") :]
        logger.setLevel(config.log_level)
        self.url = url
        self.config = config
        self._journal_dir = journal_dir
        self._token = token
        self._auth = auth
        self._connector = connector or self._websocket_connector
        self._state = ConnectionState.CONNECTING
        self._state_listeners: list[trio.MemorySendChannel[ConnectionState]] = []
        self._listeners: list[_Listener] = []
        self._backlog: list[Message | Gap] = []  # arrived while no matching messages() iterator
        self._backlog_room = trio.Event()
        self._subscriptions: dict[str, ChannelPosition | None] = {}
        self._pending_requests: dict[int, trio.Event] = {}
        self._answers: dict[int, Error | Subscribed | Unsubscribed | Receipts] = {}
        self._next_rid = 1
        self._control: list[ClientFrame] = []
        self._link: _Link | None = None
        self._journal: Journal | None = None
        self._outbox: Outbox | None = None
        self._closing = False
        self._aborting = False
        self._failure: ConnectionFailed | None = None
        self._cancel = trio.CancelScope()
        self._stopped = trio.Event()
        self._connected = trio.Event()
        self._backoff = Backoff(config.initial_retry_delay, config.max_retry_delay, config.jitter)
        self.total_reconnects = 0
        self._link_lost_at: float | None = None
        self._reconnect_times: list[float] = []
        self._auth_failures = 0
        self._network_changed = trio.Event()
        self._outcome_listeners: list[trio.MemorySendChannel[Outcome]] = []
        self._signal_started: Callable[[], None] = lambda: None
        self._transports: trio.Nursery | None = None
        self._services: dict[str, Service] = {}
        self._routes: dict[type, Service] = {}
        for factory in services:
            service = factory(self)
            self._services[service.name] = service
            for frame_type in service.frames:
                self._routes[frame_type] = service

    # --- services --------------------------------------------------------------------------------

    def _service(self, name: str) -> Service:
        try:
            return self._services[name]
        except KeyError:
            raise AttributeError(f"this connection runs no {name} service") from None

    @property
    def presence(self) -> PresenceService:
        """Who is present in a channel, and this client's own status (:doc:`presence`)."""
        return cast("PresenceService", self._service("presence"))

    @property
    def typing(self) -> TypingService:
        """Typing indicators (:doc:`typing`)."""
        return cast("TypingService", self._service("typing"))

    @property
    def receipts(self) -> ReceiptsService:
        """Read receipts (:doc:`receipts`)."""
        return cast("ReceiptsService", self._service("receipts"))

    def notify_network_change(self) -> None:
        """Tell the connection the network changed (came back, switched): if it is waiting to
        reconnect, it tries at once instead of waiting out the backoff delay. The network
        monitor calls it; call it yourself when your app knows better."""
        self._network_changed.set()

    # --- public state ----------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def client_id(self) -> str:
        """This client's id: stable for the life of its journal."""
        assert self._journal is not None
        return self._journal.client_id

    @property
    def last_seq(self) -> int:
        """The highest upstream seq this client's journal has assigned (0: nothing sent yet).
        Survives restarts with the journal, so a producer can tell where it stopped."""
        return self._journal.last_seq if self._journal else 0

    @property
    def metrics(self) -> Metrics:
        """A snapshot of the counters (see :meth:`metrics_updates` for a live feed)."""
        outbox = self._outbox
        p50 = p99 = None
        if outbox is not None and len(outbox.latencies) >= 2:
            cuts = statistics.quantiles(outbox.latencies, n=100, method="inclusive")
            p50, p99 = cuts[49], cuts[98]
        elif outbox is not None and outbox.latencies:
            p50 = p99 = outbox.latencies[0]
        times = self._reconnect_times
        return Metrics(
            total_reconnects=self.total_reconnects,
            total_messages_sent=outbox.sent_total if outbox else 0,
            total_messages_acked=outbox.acked_total if outbox else 0,
            current_queue_size=outbox.pending_count if outbox else 0,
            outbox_bytes=outbox.pending_bytes if outbox else 0,
            average_reconnect_time=sum(times) / len(times) if times else None,
            ack_latency_p50=p50,
            ack_latency_p99=p99,
            replayed=outbox.replayed_total if outbox else 0,
            duplicates=outbox.duplicates_total if outbox else 0,
            rejected=outbox.rejected_total if outbox else 0,
            state=self._state.value,
        )

    def metrics_updates(self, interval: float = 1.0) -> _MetricsUpdates:
        """Iterate over :attr:`metrics` snapshots: one at once, then one every ``interval``
        seconds, until the connection closes."""
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        return _MetricsUpdates(self, float(interval))

    def acks(self) -> Stream[Outcome]:
        """Iterate over the outcome of every event as the server decides it (:class:`Acked` or
        :class:`Rejected`, in the order they arrive), from now until the connection closes.
        Unread outcomes are buffered: close the stream when you stop reading."""
        send, receive = trio.open_memory_channel[Outcome](math.inf)
        self._outcome_listeners.append(send)
        if self._outbox is not None:
            self._outbox.on_outcome = self._on_outcome
        return Stream(receive, [])

    def _on_outcome(self, outcome: Outcome) -> None:
        for listener in list(self._outcome_listeners):
            try:
                listener.send_nowait(outcome)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._outcome_listeners.remove(listener)
        if not self._outcome_listeners and self._outbox is not None:
            # Nobody listens: the outbox then makes no outcome object it does not need.
            self._outbox.on_outcome = None

    @property
    def pending_count(self) -> int:
        """Events sent but not yet acknowledged by the server."""
        return self._outbox.pending_count if self._outbox else 0

    def states(self) -> Stream[ConnectionState]:
        """Iterate over the current state, then every transition, until the connection closes."""
        send, receive = trio.open_memory_channel[ConnectionState](math.inf)
        send.send_nowait(self._state)
        self._state_listeners.append(send)
        return Stream(receive, [])

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        logger.info("connection %s -> %s", self._state.value, state.value)
        self._state = state
        if state is ConnectionState.CONNECTED:
            self._connected.set()
        else:
            self._connected = trio.Event()
        for listener in list(self._state_listeners):
            try:
                listener.send_nowait(state)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._state_listeners.remove(listener)
        if state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            for listener in self._state_listeners:
                listener.close()
            self._state_listeners.clear()

    def _require_outbox(self) -> Outbox:
        if self._failure is not None:
            raise self._failure
        if self._closing or self._outbox is None:
            raise RealtimeClosedError("the connection is closed")
        return self._outbox

    # --- sending ---------------------------------------------------------------------------------

    async def send(
        self, channel: str, event: str, payload: Any, *, idempotency_key: str | None = None
    ) -> Receipt:
        """Send an event to ``channel``. Returns once it is journaled (durable as the configured
        ``durability`` promises), with a :class:`Receipt` whose ``wait()`` gives the server's
        verdict. Works offline: the event goes out when the link is back."""
        receipt = await self._require_outbox().send(
            channel, event, payload, idempotency_key=idempotency_key
        )
        self._on_send(channel)
        return receipt

    async def send_many(self, channel: str, event: str, payloads: Sequence[Any]) -> list[Receipt]:
        """Send several events with one journal write (one fsync under ``always``)."""
        receipts = await self._require_outbox().send_many(channel, event, payloads)
        self._on_send(channel)
        return receipts

    def _on_send(self, channel: str) -> None:
        for service in self._services.values():
            service.on_send(channel)

    async def drain(self) -> None:
        """Wait until every event sent so far (including those recovered from the journal) is
        acknowledged or rejected by the server."""
        outbox = self._require_outbox()
        while outbox.pending_count:
            await outbox.wait_changed()
            if self._failure is not None:
                raise self._failure
        await trio.lowlevel.checkpoint()

    def _queue_control(self, frame: ClientFrame) -> None:
        self._control.append(frame)
        if self._outbox is not None:
            self._outbox.wake()

    # --- subscriptions ---------------------------------------------------------------------------

    async def subscribe(self, channel: str, *, from_offset: int | None = None) -> None:
        """Receive ``channel``'s events in :meth:`messages`. The position is persisted in the
        journal, so after a restart the server replays exactly what was missed.

        The first time this journal subscribes to ``channel``, events start after the channel's
        newest one, or after ``from_offset`` if given (``0``: from the oldest event the server
        still keeps; older history it dropped is reported as a :class:`Gap`). After that, the
        journal's position wins."""
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty string, got {channel!r}")
        if from_offset is not None and (
            isinstance(from_offset, bool) or not isinstance(from_offset, int) or from_offset < 0
        ):
            raise ValueError(f"from_offset must be a non-negative integer, got {from_offset!r}")
        journal = self._journal
        self._require_outbox()
        assert journal is not None
        if channel in self._subscriptions:
            await trio.lowlevel.checkpoint()
            return
        cursor = journal.cursors.get(channel)
        if cursor is not None:
            position: ChannelPosition | None = ChannelPosition(cursor.offset, cursor.epoch)
        elif from_offset is not None:
            position = ChannelPosition(from_offset)
        else:
            position = None
        self._subscriptions[channel] = position
        if self._state is ConnectionState.CONNECTED:
            await self._request(Subscribe(self._rid(), channel, *_position_args(position)))
        else:
            await trio.lowlevel.checkpoint()

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` and forget its position."""
        journal = self._journal
        self._require_outbox()
        assert journal is not None
        if self._subscriptions.pop(channel, _MISSING) is _MISSING:
            await trio.lowlevel.checkpoint()
            return
        await journal.remove_cursor(channel)
        if self._state is ConnectionState.CONNECTED:
            await self._request(Unsubscribe(self._rid(), channel))

    def _rid(self) -> int:
        rid = self._next_rid
        self._next_rid += 1
        return rid

    async def _request(
        self, frame: Subscribe | Unsubscribe | ReceiptsQuery
    ) -> Subscribed | Unsubscribed | Receipts | None:
        """Send a request on the current link and wait for its answer: ``None`` if the link went
        down first or nothing came within ``connect_timeout``; a refusal raises
        :class:`RequestRefused`."""
        done = trio.Event()
        self._pending_requests[frame.rid] = done
        self._queue_control(frame)
        try:
            with trio.move_on_after(self.config.connect_timeout):
                await done.wait()
        finally:
            self._pending_requests.pop(frame.rid, None)
            answer = self._answers.pop(frame.rid, None)
        if isinstance(answer, Error):
            raise RequestRefused(
                f"{type(frame).__name__} of {frame.channel!r} refused: {answer.code}: {answer.message}",
                answer.code,
            )
        return answer

    async def _wait_connected(self) -> None:
        """Wait until the connection is connected; raise if it fails or closes meanwhile."""
        while self._state is not ConnectionState.CONNECTED:
            self._require_outbox()
            states = self.states()
            async with states:
                async for state in states:
                    if state is ConnectionState.CONNECTED:
                        break
            self._require_outbox()
        await trio.lowlevel.checkpoint()

    # --- receiving -------------------------------------------------------------------------------

    def messages(self, channel: str | None = None) -> Stream[Message | Gap]:
        """Iterate over the events of ``channel`` (or of every subscribed channel) as they
        arrive, each once, in offset order; and a :class:`Gap` wherever history was lost.

        Breaking out of the loop is fine: the stream unregisters when it is closed or dropped.

        Positions are persisted as you *process* events: an event counts as processed when you
        ask for the next one (or call ``await stream.commit()``). If the process dies while
        handling an event, the next process on the same journal gets that event again (same
        channel and offset), never loses it; within one process nothing is delivered twice.

        Events that arrive while nobody iterates over a matching ``messages()`` are kept (up to
        ``_BACKLOG_LIMIT``; beyond that the reader waits, which slows the server down for this
        client) and handed to the next matching iterator, so none is dropped on the floor.
        """
        send, receive = trio.open_memory_channel[Message | Gap](1024)
        entry = _Listener(channel, send)
        # Take the backlog and register in one step (no checkpoint): nothing slips in between.
        kept = [i for i in self._backlog if channel is None or i.channel == channel]
        self._backlog = [i for i in self._backlog if not (channel is None or i.channel == channel)]
        self._backlog_room.set()
        self._listeners.append(entry)
        return Stream(receive, kept, self._processed, self._committed)

    async def _starting_point(self, channel: str, position: ChannelPosition) -> None:
        """The server told where a subscription starts. Persist it only for a subscription the
        journal does not know yet (so a restart resumes it); otherwise the journal keeps what the
        application processed, which may be behind what arrived."""
        journal = self._journal
        assert journal is not None
        if channel in journal.cursors:
            await trio.lowlevel.checkpoint()
        else:
            await journal.set_cursor(channel, position.offset, position.epoch)

    async def _committed(self, item: Message | Gap) -> None:
        """``stream.commit()``: as :meth:`_processed`, and the position is written when it
        returns."""
        await self._processed(item, wait=True)

    async def _processed(self, item: Message | Gap, *, wait: bool = False) -> None:
        """The application asked for the next item after ``item``: persist ``item``'s channel
        position, so after a crash the server replays from the first event not processed. (The
        journal writes it with its next batch; ``wait``: before returning.)"""
        journal = self._journal
        offset = item.offset if isinstance(item, Message) else item.last_missing
        if offset is None or journal is None or item.channel not in self._subscriptions:
            await trio.lowlevel.checkpoint()
            return
        cursor = journal.cursors.get(item.channel)
        if cursor is not None and cursor.epoch == item.epoch and cursor.offset >= offset:
            await trio.lowlevel.checkpoint()
            return
        # If the connection closed meanwhile, the event is simply delivered again next time.
        with contextlib.suppress(JournalClosed):
            await journal.set_cursor(item.channel, offset, item.epoch, wait=wait)

    async def _deliver(self, item: Message | Gap) -> None:
        delivered = False
        for entry in list(self._listeners):
            if entry.channel is None or entry.channel == item.channel:
                if isinstance(item, Message) and entry.has(item):
                    delivered = True  # given before a dropped link cut this hand-over short
                    continue
                try:
                    await entry.send.send(item)
                    delivered = True
                    if isinstance(item, Message):
                        entry.given[item.channel] = (item.epoch, item.offset)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if entry in self._listeners:
                        self._listeners.remove(entry)
        if not delivered:
            while len(self._backlog) >= _BACKLOG_LIMIT:
                self._backlog_room = trio.Event()
                await self._backlog_room.wait()
            self._backlog.append(item)

    # --- lifecycle -------------------------------------------------------------------------------

    async def aclose(self, *, grace_period: float | None = None, abort: bool = False) -> None:
        """Close: wait up to ``grace_period`` (default: ``config.close_grace_period``) for
        unacknowledged events to be acked, then close the link cleanly (``abort``: drop it at
        once, without the close handshake). What is still unacknowledged stays in the journal for
        next time."""
        self._aborting = self._aborting or abort
        if self._closing:
            await self._stopped.wait()
            return
        outbox = self._outbox
        if grace_period is None:
            grace_period = self.config.close_grace_period
        if outbox is not None and self._state is ConnectionState.CONNECTED and grace_period > 0:
            with trio.move_on_after(grace_period):
                while outbox.pending_count and self._state is ConnectionState.CONNECTED:
                    await outbox.wait_changed()
        self._closing = True
        if outbox is not None:
            outbox.close()
        self._cancel.cancel()
        await self._stopped.wait()

    async def _websocket_connector(
        self, nursery: trio.Nursery, url: str, connect_timeout: float
    ) -> Transport:
        return await connect_websocket(
            nursery, url, connect_timeout, ssl_context=self.config.ssl_context
        )

    async def _run(self, *, task_status: trio.TaskStatus[Connection]) -> None:
        config = self.config
        journal_dir = self._journal_dir
        if journal_dir is None and config.durability.value != "memory":
            journal_dir = _default_journal_dir(self.url)
        try:
            # Transports' own background tasks (trio-websocket's reader) live outside the scope
            # that aclose() cancels, so a closing link can still complete its close handshake.
            async with trio.open_nursery() as transports:
                self._transports = transports
                try:
                    with self._cancel:
                        async with open_journal(
                            journal_dir, durability=config.durability
                        ) as journal:
                            self._journal = journal
                            self._outbox = Outbox(
                                journal,
                                max_messages=config.max_outbox_messages,
                                max_bytes=config.max_outbox_bytes,
                                full_policy=config.outbox_full,
                            )
                            if self._outcome_listeners:
                                self._outbox.on_outcome = self._on_outcome
                            for channel, cursor in journal.cursors.items():
                                position = ChannelPosition(cursor.offset, cursor.epoch)
                                self._subscriptions[channel] = position
                            async with trio.open_nursery() as services:
                                for service in self._services.values():
                                    services.start_soon(service.run)
                                await self._supervise(task_status)
                                services.cancel_scope.cancel()
                finally:
                    transports.cancel_scope.cancel()
        finally:
            if self._outbox is not None:
                self._outbox.close()
            if self._state is not ConnectionState.FAILED:
                self._set_state(ConnectionState.CLOSED)
            for entry in self._listeners:
                entry.send.close()
            for outcomes in self._outcome_listeners:
                outcomes.close()
            for service in self._services.values():
                service.close()
            self._stopped.set()

    async def _supervise(self, task_status: trio.TaskStatus[Connection]) -> None:
        config = self.config
        started = False

        def signal_started() -> None:
            # The first attempt has finished (connected, or failed and retrying in the background).
            nonlocal started
            if not started:
                started = True
                task_status.started(self)

        self._signal_started = signal_started
        while True:
            down = await self._run_link()
            signal_started()
            if self._state is ConnectionState.FAILED:  # by the journal (see _load_backlog)
                return
            action = close_action(down.code)
            if action is CloseAction.FAIL:
                self._fail(
                    f"the server refused the connection ({down.code}: {down.reason})", down.code
                )
                return
            if action is CloseAction.REFRESH_TOKEN and not await self._refresh_token():
                return
            self._set_state(ConnectionState.RECONNECTING)
            if config.max_retries is not None and self._backoff.attempt >= config.max_retries:
                self._fail(
                    f"gave up after {config.max_retries} retries ({down.code}: {down.reason})",
                    down.code,
                )
                return
            if action is CloseAction.RECONNECT_NOW:
                delay = 0.0
                self._backoff.attempt += 1
            elif down.code == CloseCode.RATE_LIMITED:
                delay = self._backoff.at_least(config.initial_retry_delay)
            else:
                delay = self._backoff.next_delay()
            logger.info("reconnecting in %.3f s after %s", delay, down)
            await self._backoff_wait(delay)
            self.total_reconnects += 1

    async def _backoff_wait(self, delay: float) -> None:
        """Sleep ``delay``, cut short by :meth:`notify_network_change`."""
        self._network_changed = trio.Event()
        with trio.move_on_after(delay):
            await self._network_changed.wait()
            logger.info("network changed: reconnecting now")

    async def _refresh_token(self) -> bool:
        """The server refused the token (4001): get another from the auth delegate. Returns
        ``False`` (after moving to ``failed``) when there is no way to get one."""
        auth = self._auth
        if auth is None:
            self._fail(
                "the server refused the token (4001) and there is no auth delegate to refresh it",
                CloseCode.UNAUTHORIZED,
                AuthenticationFailed,
            )
            return False
        self._auth_failures += 1
        if self._auth_failures >= self.config.max_auth_failures:
            self._fail(
                f"the server refused {self._auth_failures} tokens in a row (4001)",
                CloseCode.UNAUTHORIZED,
                AuthenticationFailed,
            )
            return False
        refused = self._token
        try:
            # Another connection sharing the delegate may have refreshed already: use that.
            token = await auth.get_token()
            if token == refused:
                token = await auth.refresh_token()
        except Exception as exc:
            # Its message could quote a token: log the type only. The next attempt tries again.
            logger.warning("the auth delegate failed to refresh the token: %s", type(exc).__name__)
            return True
        if not isinstance(token, str) or not token:
            self._fail(
                "the auth delegate returned no token", CloseCode.UNAUTHORIZED, AuthenticationFailed
            )
            return False
        self._token = token
        return True

    def _fail(
        self,
        message: str,
        code: int | None,
        error: type[ConnectionFailed] = ConnectionFailed,
    ) -> None:
        logger.error("connection failed: %s", message)
        self._failure = error(message, code)
        self._set_state(ConnectionState.FAILED)
        if self._outbox is not None:
            self._outbox.wake()

    async def _run_link(self) -> _LinkDown:
        """Connect, resume, run reader/writer/heartbeat until the link dies; say how it ended."""
        journal, outbox = self._journal, self._outbox
        assert journal is not None
        assert outbox is not None
        config = self.config
        transport: Transport | None = None
        link: _Link | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    assert self._transports is not None
                    transport = await self._connector(
                        self._transports, self.url, config.connect_timeout
                    )
                except TransportClosed as exc:
                    nursery.cancel_scope.cancel()
                    return _LinkDown(exc.code, exc.reason)
                proto = ClientProtocol()
                link = _Link(transport, proto, nursery.cancel_scope)
                self._link = link
                try:
                    await self._handshake(link)
                except _LinkDown as down:
                    link.down = down
                    nursery.cancel_scope.cancel()
                    return down
                self._control.clear()
                for channel, position in self._subscriptions.items():
                    # Subscribed while offline (position None: from now), or after the resume
                    # went out: not part of this link's resume, so ask for it now.
                    if channel not in link.proto.cursors:
                        args = _position_args(position)
                        self._control.append(Subscribe(self._rid(), channel, *args))
                for service in self._services.values():
                    service.on_resumed()
                if self._link_lost_at is not None:
                    self._reconnect_times.append(trio.current_time() - self._link_lost_at)
                    self._link_lost_at = None
                self._auth_failures = 0
                self._set_state(ConnectionState.CONNECTED)
                self._signal_started()
                self._backoff.reset()
                nursery.start_soon(self._reader, link)
                nursery.start_soon(self._writer, link)
                nursery.start_soon(self._heartbeat, link)
            assert link.down is not None
            return link.down
        except TransportClosed as exc:
            return _LinkDown(exc.code, exc.reason)
        finally:
            self._link = None
            if link is not None and self._state is ConnectionState.CONNECTED:
                self._link_lost_at = trio.current_time()
            for event in self._pending_requests.values():
                event.set()
            if transport is not None:
                # Cancelled from outside (not by aclose()): the transports' reader may be cancelled
                # too, so a close handshake could only time out. Drop the link at once.
                cancelled = trio.current_effective_deadline() == -math.inf
                abort = self._aborting or (cancelled and not self._closing)
                with trio.CancelScope(shield=True):
                    if abort:
                        await transport.abort()
                    else:
                        await transport.aclose(1000)

    async def _handshake(self, link: _Link) -> None:
        journal, outbox = self._journal, self._outbox
        assert journal is not None
        assert outbox is not None
        token = self._token
        if self._auth is not None and token is None:
            token = self._token = await self._auth.get_token()
        channels = {c: p for c, p in self._subscriptions.items() if p is not None}
        resume = Resume(journal.client_id, journal.ack_seq, token, channels)
        with trio.move_on_after(self.config.connect_timeout) as scope:
            try:
                await link.transport.send(link.proto.send(resume))
                while link.proto.session is None:
                    data = await link.transport.receive()
                    link.proto.receive_data(data)
                    for event in link.proto.events():
                        await self._on_event(link, event)
            except TransportClosed as exc:
                raise _LinkDown(exc.code, exc.reason) from None
            except ProtocolError as exc:
                raise _LinkDown(exc.close_code, str(exc)) from None
        if scope.cancelled_caught:
            raise _LinkDown(None, "no resume_response in time")

    async def _on_event(self, link: _Link, event: object) -> None:
        journal, outbox = self._journal, self._outbox
        assert journal is not None
        assert outbox is not None
        if isinstance(event, DownstreamEvent):
            message = Message(
                event.channel,
                event.offset,
                event.epoch,
                event.event,
                event.payload,
                event.sender,
                event.timestamp,
                event.idempotency_key,
            )
            for service in self._services.values():
                service.on_message(message)
            await self._deliver(message)
            # Handed over: a resume within this process continues from here (not before: if the
            # link drops while the hand-over waits for room, the event is asked for again). The
            # journal's cursor moves when the application has processed it (see _processed).
            if event.channel in self._subscriptions:
                self._subscriptions[event.channel] = ChannelPosition(event.offset, event.epoch)
        elif isinstance(event, Ack):
            await outbox.ack(event.ack_seq, event.duplicates)
        elif isinstance(event, ResumeResponse):
            link.max_frame_bytes = event.max_frame_bytes
            await outbox.resume(event.ack_seq)
            for channel, position in link.proto.cursors.items():
                if channel in self._subscriptions:
                    self._subscriptions[channel] = position
                    await self._starting_point(channel, position)
        elif isinstance(event, Error):
            if event.fatal:
                # The close that follows carries the same meaning; act on it now.
                code = fatal_close_code(event.code)
                link.fail(code, f"server error {event.code}: {event.message}")
            elif event.seq is not None:
                outbox.reject(event.seq, event.code, event.message)
            elif event.rid is not None and event.rid in self._pending_requests:
                self._answers[event.rid] = event
                self._pending_requests[event.rid].set()
            else:
                logger.warning("server error %s: %s", event.code, event.message)
        elif isinstance(event, Subscribed | Unsubscribed | Receipts):
            if isinstance(event, Subscribed) and event.channel in self._subscriptions:
                restored = link.proto.cursors.get(event.channel)
                if restored is not None:
                    self._subscriptions[event.channel] = restored
                    await self._starting_point(event.channel, restored)
            waiter = self._pending_requests.get(event.rid)
            if waiter is not None:
                self._answers[event.rid] = event
                waiter.set()
            if isinstance(event, Receipts) and Receipts in self._routes:
                self._routes[Receipts].on_frame(event)
        elif isinstance(event, ChannelGap):
            logger.warning("history lost on %s: %s", event.channel, event)
            await self._deliver(
                Gap(event.channel, event.epoch, event.first_missing, event.last_missing)
            )
        elif isinstance(event, Ping):
            self._queue_control(event.response())
        elif type(event) in self._routes:
            self._routes[type(event)].on_frame(event)  # type: ignore[arg-type]

    async def _reader(self, link: _Link) -> None:
        try:
            while True:
                data = await link.transport.receive()
                link.last_received = trio.current_time()
                try:
                    link.proto.receive_data(data)
                except ProtocolError as exc:
                    logger.warning("protocol error from the server: %s", exc)
                    for event in link.proto.events():
                        await self._on_event(link, event)
                    link.fail(exc.close_code, str(exc))
                    return
                for event in link.proto.events():
                    await self._on_event(link, event)
        except TransportClosed as exc:
            link.fail(exc.code, exc.reason)

    async def _writer(self, link: _Link) -> None:
        outbox = self._outbox
        assert outbox is not None
        config = self.config
        try:
            while True:
                if self._control:
                    frames, self._control = self._control, []
                    await link.transport.send(link.proto.send_many(frames))
                    continue
                if outbox.needs_load():
                    await self._load_backlog(link)
                    continue
                if outbox.has_ready():
                    if config.batch_interval > 0:
                        await trio.sleep(config.batch_interval)
                    budget = link.max_frame_bytes - _BATCH_OVERHEAD
                    entries = outbox.ready(config.batch_size, budget)
                    if entries:
                        await link.transport.send(link.proto.send_encoded(entries))
                    continue
                await outbox.wait_changed()
        except TransportClosed as exc:
            link.fail(exc.code, exc.reason)

    async def _load_backlog(self, link: _Link) -> None:
        """Read the next recovered events back from the journal; if it cannot be read, fail the
        connection (the events stay in the journal: nothing acknowledged them)."""
        assert self._outbox is not None
        try:
            await self._outbox.load_backlog()
        except JournalError as exc:
            self._fail(f"the journal's unsent events cannot be read back: {exc}", None)
            link.fail(CloseCode.NORMAL, "the journal failed")

    async def _heartbeat(self, link: _Link) -> None:
        config = self.config
        while True:
            await trio.sleep(config.heartbeat_interval)
            sent_at = trio.current_time()
            self._queue_control(Ping(int(time.time() * 1000)))
            await trio.sleep(config.heartbeat_timeout)
            if link.last_received < sent_at:
                link.fail(CloseCode.HEARTBEAT_TIMEOUT, "no answer to the heartbeat")
                return


_MISSING: Any = object()


def _position_args(position: ChannelPosition | None) -> tuple[int | None, str | None]:
    if position is None:
        return None, None
    return position.offset, position.epoch


class _MetricsUpdates:
    """``conn.metrics_updates(interval)``: a snapshot at once, then one per interval."""

    def __init__(self, connection: Connection, interval: float) -> None:
        self._connection = connection
        self._interval = interval
        self._next: float | None = None

    def __aiter__(self) -> _MetricsUpdates:
        return self

    async def __anext__(self) -> Metrics:
        connection = self._connection
        now = trio.current_time()
        if self._next is None:
            self._next = now
        with trio.move_on_at(self._next):
            await connection._stopped.wait()
        if connection._stopped.is_set():
            raise StopAsyncIteration
        self._next = max(self._next + self._interval, now)
        return connection.metrics
