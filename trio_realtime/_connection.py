"""The client connection: a facade over the link, the supervisor table, the inbox and the session.

A :class:`BaseConnection` is a supervisor task that owns the journal and, for each link to the
server, runs :func:`~trio_realtime._link.run_link` (reader, writer, heartbeat in the link's own
nursery). When a link ends, the pure table of ``_supervisor.py`` says what to do next. The
protocol's rules (request ids, subscriptions and positions, answers) are the sans-I/O
:class:`ClientSession`'s; what reaches the application goes through :class:`Broadcast` streams.
``trio_realtime.Connection`` adds the typed service accessors (``_realtime.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from ._config import ConnectionLog, DeliveryStrategy, RealtimeConfig
from ._errors import ConnectTimeout, LinkClosed, RealtimeClosedError
from ._inbox import Inbox
from ._journal import Journal, open_journal
from ._link import LinkHooks
from ._metrics import Metrics, MetricsUpdates, snapshot
from ._outbox import Outbox, Outcome, Receipt
from ._paths import default_journal_dir
from ._protocol import (
    Answer,
    Answered,
    ChannelPosition,
    ClientFrame,
    ClientSession,
    Gap,
    Message,
    Request,
    ServerNotice,
    SubscriptionStarted,
)
from ._reconnect import Reconnect
from ._requests import Requests
from ._service import ConnectionState, Service, ServiceSpec, make_service
from ._stream import Broadcast, Stream
from ._supervisor import Event, step
from ._tokens import AuthDelegate, Tokens
from .transports import Connector, connector_for

__all__ = ["BaseConnection"]

_S = TypeVar("_S", bound=Service)


class BaseConnection:
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
        services: Sequence[ServiceSpec] = (),
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a string, got {type(url).__name__}")
        self.url = url
        self.config = config
        self._log = ConnectionLog(config.log_level)
        self._connector = connector or connector_for(url, config)
        self._journal_dir = journal_dir
        self._tokens = Tokens(token, auth, config.max_auth_failures, self._log)
        self._state = ConnectionState.CONNECTING
        self._states = Broadcast[ConnectionState]()
        self._outcomes = Broadcast[Outcome]()
        self._session = ClientSession()
        self._journal: Journal | None = None
        self._outbox: Outbox | None = None
        self._inbox: Inbox | None = None
        self._aborting = False
        self._cancel = trio.CancelScope()
        self._stopped = trio.Event()
        self._reconnect = Reconnect(
            config, self._tokens, self._log, self._get_state, self._set_state
        )
        self._services = {s.name: s for s in map(make_service, services)}
        self._requests = Requests(self._session, self._wake)
        # What the link hands over, by type: the service frames to their service, the rest here.
        self._handlers: dict[type, Callable[[Any], Any]] = {
            **{kind: s.on_frame for s in self._services.values() for kind in s.frames},
            Message: self._on_message,
            Gap: self._on_gap,
            SubscriptionStarted: self._on_subscription_started,
            Answered: self._requests.answered,
            ServerNotice: self._on_notice,
        }
        for service in self._services.values():
            service.attach(self)

    # --- services and the service host -----------------------------------------------------------

    def service(self, kind: str | type[_S]) -> Any:
        """The service of this connection named ``kind`` or of class ``kind`` (typed then)."""
        for service in self._services.values():
            if service.name == kind or (isinstance(kind, type) and isinstance(service, kind)):
                return service
        raise AttributeError(f"this connection runs no {getattr(kind, '__name__', kind)} service")

    def notify_network_change(self) -> None:
        """Tell the connection the network changed (came back, switched): if it is waiting to
        reconnect, it tries at once instead of waiting out the backoff delay."""
        self._reconnect.network_changed()

    def check_open(self) -> None:
        """Raise :class:`ConnectionFailed` or :class:`RealtimeClosedError` if not usable."""
        self._require_outbox()

    def send_control(self, frame: ClientFrame) -> None:
        self._session.queue(frame)
        self._wake()

    def _wake(self) -> None:
        if self._outbox is not None:
            self._outbox.wake()

    async def request(self, make: Callable[[int], Request]) -> Answer | None:
        if not self._session.is_open:
            await trio.lowlevel.checkpoint()
            return None
        return await self._requests.wait(self._session.request(make), self.config.connect_timeout)

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until connected. Raises :class:`ConnectionFailed` if the connection fails (or
        :class:`RealtimeClosedError` if it is closed) meanwhile, and :class:`ConnectTimeout` if
        ``timeout`` seconds pass first (it goes on trying in the background): the way to fail
        fast, where the default is to work offline."""
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while self._state is not ConnectionState.CONNECTED:
                self._require_outbox()
                async with self.states() as states:
                    async for state in states:
                        if state is ConnectionState.CONNECTED:
                            break
                self._require_outbox()
            await trio.lowlevel.checkpoint()
            return
        last = self._reconnect.last_error
        why = f"; last error: {last.reason or last.code}" if last is not None else ""
        raise ConnectTimeout(f"not connected to {self.url} within {timeout} s{why}", last)

    @property
    def last_error(self) -> LinkClosed | None:
        """Why the last link ended or the last connection attempt failed (``None``: none has):
        ``code`` is the close code (``None`` when there was none), ``reason`` says why."""
        return self._reconnect.last_error

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
    def total_reconnects(self) -> int:
        """Reconnect attempts so far (also in :attr:`metrics`)."""
        return self._reconnect.total

    @property
    def pending_count(self) -> int:
        """Events sent but not yet acknowledged by the server."""
        return self._outbox.pending_count if self._outbox else 0

    @property
    def metrics(self) -> Metrics:
        """A snapshot of the counters (see :meth:`metrics_updates` for a live feed)."""
        r = self._reconnect
        return snapshot(self._outbox, r.total, r.times, self._state.value)

    def metrics_updates(self, interval: float = 1.0) -> MetricsUpdates:
        """Iterate over :attr:`metrics` snapshots: one at once, then one every ``interval``
        seconds, until the connection closes."""
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        return MetricsUpdates(lambda: self.metrics, self._stopped, float(interval))

    def acks(self) -> Stream[Outcome]:
        """Iterate over the outcome of every event as it is decided (:class:`Acked`,
        :class:`Rejected`, :class:`Withdrawn` or :class:`Unknown`, in the order they are), from
        now until the connection closes.
        Unread outcomes are buffered: close the stream when you stop reading."""
        stream = self._outcomes.open()
        if self._outbox is not None:
            self._outbox.on_outcome = self._on_outcome
        return stream

    def _on_outcome(self, outcome: Outcome) -> None:
        if not self._outcomes.emit_nowait(outcome) and self._outbox is not None:
            self._outbox.on_outcome = None  # nobody listens: make no outcome objects

    def states(self) -> Stream[ConnectionState]:
        """Iterate over the current state, then every transition, until the connection closes."""
        return self._states.open(first=[self._state])

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._log.info("connection %s -> %s", self._state.value, state.value)
        self._state = state
        self._states.emit_nowait(state)
        if state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            self._states.close()
            if self._outbox is not None:
                self._outbox.wake()  # a send waiting for room sees the failure at once

    def _require_outbox(self) -> Outbox:
        if self._reconnect.failure is not None:
            raise self._reconnect.failure
        if self._cancel.cancel_called or self._outbox is None:
            raise RealtimeClosedError("the connection is closed")
        return self._outbox

    # --- sending ---------------------------------------------------------------------------------

    async def send(
        self,
        channel: str,
        event: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        ttl: float | None = None,
    ) -> Receipt:
        """Send an event to ``channel``. Returns once it is journaled (durable as the configured
        ``durability`` promises), with a :class:`Receipt` whose ``wait()`` gives the server's
        verdict. Works offline: the event goes out when the link is back.

        ``ttl`` (seconds; default ``RealtimeConfig.default_ttl``): if the server does not have
        the event by then, it is withdrawn and its receipt resolves as
        :class:`Withdrawn` (``reason="expired"``); it counts from this call, in this process."""
        outbox = self._require_outbox()
        receipt = await outbox.send(
            channel, event, payload, idempotency_key=idempotency_key, ttl=ttl
        )
        for service in self._services.values():
            service.on_send(channel)
        return receipt

    async def send_many(
        self, channel: str, event: str, payloads: Sequence[Any], *, ttl: float | None = None
    ) -> list[Receipt]:
        """Send several events with one journal write (one fsync under ``always``)."""
        receipts = await self._require_outbox().send_many(channel, event, payloads, ttl=ttl)
        for service in self._services.values():
            service.on_send(channel)
        return receipts

    async def discard_pending(self, channel: str | None = None) -> int:
        """Withdraw every event not yet acknowledged (of ``channel``, if given), including those
        recovered from the journal; returns how many. The withdrawal is journaled before this
        returns. A receipt resolves as :class:`Withdrawn` (``reason="discarded"``), or, for an
        event the server may already hold (it was sent since the last resume), as soon as an
        ack or the next resume says: :class:`Acked` if the server had it. Nothing is lost
        silently: the server receives a skip in place of each withdrawn event."""
        if channel is not None and (not isinstance(channel, str) or not channel):
            raise ValueError(f"channel must be a non-empty string or None, got {channel!r}")
        return await self._require_outbox().discard(channel)

    async def drain(self) -> None:
        """Wait until every event sent so far (including those recovered from the journal) is
        acknowledged or rejected by the server."""
        outbox = self._require_outbox()
        while outbox.pending_count:
            await outbox.wait_changed()
            self._require_outbox()
        await trio.lowlevel.checkpoint()

    # --- subscriptions and messages --------------------------------------------------------------

    async def subscribe(self, channel: str, *, from_offset: int | None = None) -> int | None:
        """Receive ``channel``'s events in :meth:`messages`. The position is persisted in the
        journal, so after a restart the server replays exactly what was missed.

        The first time this journal subscribes to ``channel``, events start after the channel's
        newest one, or after ``from_offset`` if given (``0``: from the oldest event the server
        still keeps; older history it dropped is reported as a :class:`Gap`). After that, the
        journal's position wins.

        Returns the offset events start after, once the server has said it (for a first
        subscription without ``from_offset``: the channel's newest offset, 0 for an empty
        channel), or ``None`` when offline (the subscription is made with the next link)."""
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty string, got {channel!r}")
        if from_offset is not None and (
            isinstance(from_offset, bool) or not isinstance(from_offset, int) or from_offset < 0
        ):
            raise ValueError(f"from_offset must be a non-negative integer, got {from_offset!r}")
        self._require_outbox()
        journal = self._journal
        assert journal is not None
        if channel in self._session.positions:
            await trio.lowlevel.checkpoint()
            known = self._session.positions[channel]
            return known.offset if known is not None else None
        cursor = journal.cursors.get(channel)
        position = None
        if cursor is not None:
            position = ChannelPosition(cursor.offset, cursor.epoch)
        elif from_offset is not None:
            position = ChannelPosition(from_offset)
        answer = await self._requests.wait(
            self._session.subscribe(channel, position), self.config.connect_timeout
        )
        started = self._session.positions.get(channel)
        return started.offset if answer is not None and started is not None else None

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` and forget its position."""
        self._require_outbox()
        journal = self._journal
        assert journal is not None
        if channel not in self._session.positions:
            await trio.lowlevel.checkpoint()
            return
        request = self._session.unsubscribe(channel)
        await journal.remove_cursor(channel)
        await self._requests.wait(request, self.config.connect_timeout)

    def messages(self, channel: str | None = None) -> Stream[Message | Gap]:
        """Iterate over the events of ``channel`` (or of every subscribed channel) as they
        arrive, each once, in offset order; and a :class:`Gap` wherever history was lost.

        Breaking out of the loop is fine: the stream unregisters when it is closed or dropped.

        Positions are persisted as you *process* events: an event counts as processed when you
        ask for the next one (or call ``await stream.commit()``). If the process dies while
        handling an event, the next process on the same journal gets that event again (same
        channel and offset), never loses it; within one process nothing is delivered twice.

        Events that arrive while nobody iterates over a matching ``messages()`` are kept (up to
        10,000; beyond that the reader waits, which slows the server down for this client) and
        handed to the next matching iterator, so none is dropped on the floor."""
        self._require_outbox()
        assert self._inbox is not None
        return self._inbox.messages(channel)

    # --- what the link hands over (type -> handler) ----------------------------------------------

    async def _on_message(self, message: Message) -> None:
        assert self._inbox is not None
        for service in self._services.values():
            service.on_message(message)
        await self._inbox.deliver(message)
        self._session.delivered(message)

    async def _on_gap(self, gap: Gap) -> None:
        assert self._inbox is not None
        self._log.warning("history lost on %s: %s", gap.channel, gap)
        await self._inbox.deliver(gap)

    async def _on_subscription_started(self, event: SubscriptionStarted) -> None:
        assert self._inbox is not None
        await self._inbox.starting_point(event.channel, event.position)

    def _on_notice(self, event: ServerNotice) -> None:
        self._log.warning("server error %s: %s", event.code, event.message)

    # --- lifecycle -------------------------------------------------------------------------------

    async def aclose(self, *, grace_period: float | None = None, abort: bool = False) -> None:
        """Close: wait up to ``grace_period`` (default: ``config.close_grace_period``) for
        unacknowledged events to be acked, then close the link cleanly (``abort``: drop it at
        once, without the close handshake). What is still unacknowledged stays in the journal for
        next time."""
        self._aborting = self._aborting or abort
        if self._cancel.cancel_called:  # closing already
            await self._stopped.wait()
            return
        outbox = self._outbox
        if grace_period is None:
            grace_period = self.config.close_grace_period
        if outbox is not None and self._state is ConnectionState.CONNECTED and grace_period > 0:
            with trio.move_on_after(grace_period):
                while outbox.pending_count and self._state is ConnectionState.CONNECTED:
                    await outbox.wait_changed()
        if outbox is not None:
            outbox.close()
        self._cancel.cancel()
        await self._stopped.wait()

    async def _run(self, *, task_status: trio.TaskStatus[BaseConnection]) -> None:
        config = self.config
        journal_dir = self._journal_dir
        if journal_dir is None and config.durability.value != "memory":
            journal_dir = default_journal_dir(self.url)
        use_directory = getattr(self._connector, "use_directory", None)
        if use_directory is not None and journal_dir is not None:
            # A connector with state of its own (Socket.IO's recovery) keeps it beside the
            # journal, so that a restarted process finds it.
            use_directory(os.fspath(journal_dir))
        try:
            # Transports' own background tasks (trio-websocket's reader) live outside the scope
            # that aclose() cancels, so a closing link can still complete its close handshake.
            async with trio.open_nursery() as transports:
                try:
                    with self._cancel:
                        async with open_journal(journal_dir, durability=config.durability) as j:
                            await self._start(j, transports, task_status)
                finally:
                    transports.cancel_scope.cancel()
        finally:
            if self._outbox is not None:
                self._outbox.close()
            self._set_state(step(self._state, Event.CLOSE_REQUESTED)[0])  # failed stays failed
            if self._inbox is not None:
                self._inbox.close()
            self._outcomes.close()
            for service in self._services.values():
                service.close()
            self._stopped.set()

    async def _start(
        self, journal: Journal, transports: trio.Nursery, task_status: trio.TaskStatus[Any]
    ) -> None:
        config = self.config
        self._journal = journal
        self._outbox = Outbox(
            journal,
            max_messages=config.max_outbox_messages,
            max_bytes=config.max_outbox_bytes,
            full_policy=config.outbox_full,
            at_most_once=config.delivery_strategy is DeliveryStrategy.AT_MOST_ONCE,
            default_ttl=config.default_ttl,
        )
        if self._outcomes.has_streams:
            self._outbox.on_outcome = self._on_outcome
        positions = {c: ChannelPosition(k.offset, k.epoch) for c, k in journal.cursors.items()}
        self._session.restore(positions)
        self._inbox = Inbox(journal, self._session.positions.__contains__)
        hooks = LinkHooks(
            connector=self._connector,
            transports=transports,
            session=self._session,
            journal=journal,
            outbox=self._outbox,
            config=config,
            log=self._log,
            get_token=self._tokens.current,
            handlers=self._handlers,
            on_up=lambda: self._on_link_up(started),
            should_abort=self._should_abort,
        )

        def started() -> None:
            # The first attempt has finished (connected, or failed and retrying in the background).
            nonlocal task_status
            task_status.started(self)
            task_status = trio.TASK_STATUS_IGNORED

        async with trio.open_nursery() as services:
            for service in self._services.values():
                services.start_soon(service.run)
            services.start_soon(self._outbox.run_expiry)
            await self._reconnect.run(hooks, self.url, self._on_link_down, started)
            services.cancel_scope.cancel()

    def _should_abort(self, cancelled: bool) -> bool:
        """Drop the link rather than close it: asked to, or cancelled from outside (not by
        aclose()), when the transports' reader may be cancelled too."""
        return self._aborting or (cancelled and not self._cancel.cancel_called)

    def _get_state(self) -> ConnectionState:
        return self._state

    def _on_link_up(self, started: Callable[[], None]) -> None:
        for service in self._services.values():
            service.on_resumed()
        self._reconnect.link_up()
        started()

    def _on_link_down(self) -> None:
        self._requests.lost(self._session.link_lost())
        if self._outbox is not None:
            self._outbox.link_lost()
