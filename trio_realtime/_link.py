"""One link to the server: connect, handshake, then the reader, the writer and the heartbeat.

A link lives in its own nursery; when it dies (a close, a drop, a missed heartbeat, a protocol
error by the server) that nursery is cancelled as a whole and :func:`run_link` says how it ended.
The protocol's rules are the session's (:class:`ClientSession`); this module only moves bytes and
time. The reader is the only task that reads, the writer the only one that writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from ._config import ConnectionLog, RealtimeConfig
from ._errors import JournalError, LinkClosed
from ._journal import Journal
from ._outbox import Outbox
from ._protocol import (
    Ack,
    ClientSession,
    CloseCode,
    MustClose,
    Ping,
    SendRefused,
    SessionStarted,
)
from .transports import Connector, Transport

__all__ = ["LinkDown", "LinkHooks", "run_link"]

#: Bytes a batch may use: the server's max_frame_bytes minus room for the array brackets.
_BATCH_OVERHEAD = 16


@attrs.frozen
class LinkDown:
    """How a link ended: the close code (``None``: none) and why; ``journal_failed`` when the
    journal could not read back what must be sent (the connection then fails)."""

    code: int | None
    reason: str
    journal_failed: bool = False


@attrs.define
class LinkHooks:
    """What a link needs from its connection."""

    connector: Connector
    transports: trio.Nursery
    """Owns the transports' own tasks (outside the link's scope, so a close can complete)."""
    session: ClientSession
    journal: Journal
    outbox: Outbox
    config: RealtimeConfig
    log: ConnectionLog
    get_token: Callable[[], Awaitable[str | None]]
    handlers: Mapping[type, Callable[[Any], Awaitable[None] | None]]
    """The connection's handler of each other kind of session event (sync or async); an event
    of a kind no one handles is dropped."""
    on_up: Callable[[], None]
    """Called once resumed, before the link's tasks start."""
    should_abort: Callable[[bool], bool]
    """Given whether the link's task is being cancelled from outside: whether to drop the link
    instead of closing it cleanly."""


class _Link:
    def __init__(self, hooks: LinkHooks, transport: Transport, scope: trio.CancelScope) -> None:
        self.hooks = hooks
        self.transport = transport
        self.scope = scope
        self.down: LinkDown | None = None
        self.last_received = trio.current_time()
        self.max_frame_bytes = 1 << 20
        self.handlers: dict[type, Callable[[Any], Awaitable[None] | None]] = {
            **hooks.handlers,
            SessionStarted: self._on_started,
            Ack: self._on_ack,
            SendRefused: self._on_refused,
            MustClose: self._on_must_close,
        }

    def fail(self, code: int | None, reason: str, *, journal_failed: bool = False) -> None:
        if self.down is None:
            self.down = LinkDown(code, reason, journal_failed)
        self.scope.cancel()

    async def handle(self, data: bytes | str) -> None:
        session = self.hooks.session
        for event in session.receive_data(data):
            handler = self.handlers.get(type(event))
            if handler is not None:
                result = handler(event)
                if result is not None:
                    await result
        if session.has_control:
            self.hooks.outbox.wake()  # a pong to send, or subscriptions to ask again

    async def _on_started(self, event: object) -> None:
        assert isinstance(event, SessionStarted)
        self.max_frame_bytes = event.max_frame_bytes
        await self.hooks.outbox.resume(event.ack_seq)

    async def _on_ack(self, event: object) -> None:
        assert isinstance(event, Ack)
        await self.hooks.outbox.ack(event.ack_seq, event.duplicates)

    def _on_refused(self, event: object) -> None:
        assert isinstance(event, SendRefused)
        self.hooks.outbox.reject(event.seq, event.code, event.message)

    def _on_must_close(self, event: object) -> None:
        assert isinstance(event, MustClose)
        self.hooks.log.warning("closing the link: %s", event.reason)
        self.fail(event.code, event.reason)

    # --- tasks -----------------------------------------------------------------------------------

    def ended(self) -> LinkDown:
        assert self.down is not None
        return self.down

    async def handshake(self) -> bool:
        """Send ``resume`` and wait for its answer; whether the link is up."""
        hooks = self.hooks
        token = await hooks.get_token()
        journal = hooks.journal
        resume = hooks.session.start_link(journal.client_id, journal.ack_seq, token)
        with trio.move_on_after(hooks.config.connect_timeout) as scope:
            try:
                await self.transport.send(resume)
                while not hooks.session.is_open and self.down is None:
                    await self.handle(await self.transport.receive())
            except LinkClosed as exc:
                self.down = LinkDown(exc.code, exc.reason)
        if scope.cancelled_caught and self.down is None:
            self.down = LinkDown(None, "no resume_response in time")
        return self.down is None

    async def reader(self) -> None:
        try:
            while True:
                data = await self.transport.receive()
                self.last_received = trio.current_time()
                await self.handle(data)
        except LinkClosed as exc:
            self.fail(exc.code, exc.reason)

    async def writer(self) -> None:
        session, outbox, config = self.hooks.session, self.hooks.outbox, self.hooks.config
        try:
            while True:
                if session.has_control:
                    await self.transport.send(session.take_control())
                elif outbox.needs_load():
                    await self._load_backlog()
                elif outbox.has_ready():
                    if config.batch_interval > 0:
                        await trio.sleep(config.batch_interval)
                    budget = self.max_frame_bytes - _BATCH_OVERHEAD
                    entries = outbox.ready(config.batch_size, budget)
                    if entries:
                        await self.transport.send(session.send_events(entries))
                else:
                    await outbox.wait_changed()
        except LinkClosed as exc:
            self.fail(exc.code, exc.reason)

    async def _load_backlog(self) -> None:
        """Read the next recovered events back from the journal; if it cannot be read, the
        connection fails (the events stay in the journal: nothing acknowledged them)."""
        try:
            await self.hooks.outbox.load_backlog()
        except JournalError as exc:
            reason = f"the journal's unsent events cannot be read back: {exc}"
            self.fail(CloseCode.NORMAL, reason, journal_failed=True)

    async def heartbeat(self) -> None:
        config = self.hooks.config
        while True:
            await trio.sleep(config.heartbeat_interval)
            sent_at = trio.current_time()
            self.hooks.session.queue(Ping(int(time.time() * 1000)))
            self.hooks.outbox.wake()
            await trio.sleep(config.heartbeat_timeout)
            if self.last_received < sent_at:
                self.fail(CloseCode.HEARTBEAT_TIMEOUT, "no answer to the heartbeat")
                return


async def run_link(hooks: LinkHooks, url: str) -> LinkDown:
    """Connect, resume, run reader/writer/heartbeat until the link dies; say how it ended."""
    transport: Transport | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                transport = await hooks.connector(
                    hooks.transports, url, hooks.config.connect_timeout
                )
            except LinkClosed as exc:
                return LinkDown(exc.code, exc.reason)
            link = _Link(hooks, transport, nursery.cancel_scope)
            if not await link.handshake():
                nursery.cancel_scope.cancel()
                return link.ended()
            hooks.on_up()
            nursery.start_soon(link.reader)
            nursery.start_soon(link.writer)
            nursery.start_soon(link.heartbeat)
        return link.ended()
    finally:
        if transport is not None:
            # Cancelled from outside (not by aclose()): the transports' reader may be cancelled
            # too, so a close handshake could only time out. Drop the link at once.
            cancelled = trio.current_effective_deadline() == -math.inf
            with trio.CancelScope(shield=True):
                if hooks.should_abort(cancelled):
                    await transport.abort()
                else:
                    await transport.aclose(1000)
