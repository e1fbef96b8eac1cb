"""The public service host: what a feature running beside a connection may use, and nothing more.

A :class:`Service` (presence, typing, receipts, the network monitor, or your own) is attached to
one connection, which runs it in its own nursery and calls its hooks. It talks to the connection
only through the :class:`ServiceHost` protocol below, so a service needs no private name and the
connection needs no service name: services and connection are independent modules.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import trio

from ._errors import RealtimeClosedError
from ._protocol import Answer, ClientFrame, Message, Request, ServerFrame
from ._stream import Stream

__all__ = ["ConnectionState", "Service", "ServiceHost"]


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


class ServiceHost(Protocol):
    """What a connection offers its services (``service.host``)."""

    @property
    def state(self) -> ConnectionState:
        """The connection's state now."""

    def states(self) -> Stream[ConnectionState]:
        """The current state, then every transition, until the connection closes."""

    def check_open(self) -> None:
        """Raise the connection's failure (:class:`~trio_realtime.ConnectionFailed`) or
        :class:`~trio_realtime.RealtimeClosedError` if it is not usable any more; call it first
        in a service method the application calls."""

    def send_control(self, frame: ClientFrame) -> None:
        """Queue ``frame`` (a meta frame: presence, typing, a kind you registered, ...) for the
        current link, written in order with the rest. A frame queued while no link is up, or
        not written before the link drops, is dropped: repeat what the server must know in
        :meth:`Service.on_resumed`."""

    async def request(self, make: Callable[[int], Request]) -> Answer | None:
        """Send the request ``make(rid)`` (the host allocates the request id) on the current
        link and wait for its answer frame: ``None`` if no link is up, or it went down first,
        or no answer came within ``connect_timeout``. A refusal (an ``error`` frame answering
        it) raises :class:`~trio_realtime.RequestRefused`."""

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once the connection is connected; raise as :meth:`check_open` if it fails or
        closes first, :class:`~trio_realtime.ConnectTimeout` after ``timeout`` seconds."""

    def notify_network_change(self) -> None:
        """Tell the connection the network changed: a reconnect waiting for its backoff delay
        tries at once."""


class Service:
    """A feature that runs beside a connection (presence, typing, receipts, ...).

    Pass instances (or zero-argument factories, such as the class itself) in ``services=`` of
    ``open_realtime``. The connection attaches each to itself (:attr:`host`), runs :meth:`run`
    in its own nursery (a service is cancelled with the connection), routes the server frames
    listed in ``frames`` to :meth:`on_frame`, and calls the other hooks. Hooks run in the
    connection's reader or in the caller of ``send``: they must not block. A service's settings
    are its constructor's arguments (``TypingService(timeout=6.0)``).
    """

    name: ClassVar[str] = ""
    """The service's name: ``conn.service(name)`` finds it (and the typed accessors, such as
    ``conn.presence``, by it)."""
    frames: ClassVar[tuple[type, ...]] = ()
    """Server frame types this service handles."""

    _host: ServiceHost | None = None

    @property
    def host(self) -> ServiceHost:
        """The connection this service is attached to."""
        if self._host is None:
            raise RealtimeClosedError(
                f"the {self.name or type(self).__name__} service is not attached"
            )
        return self._host

    def attach(self, host: ServiceHost) -> None:
        """Called once by the connection that runs this service."""
        if self._host is not None:
            raise ValueError(
                f"this {type(self).__name__} already runs beside a connection: give each "
                "connection its own instance (or pass the class)"
            )
        self._host = host

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


#: What ``services=`` accepts: a service, or something that makes one when called with nothing.
ServiceSpec = Service | Callable[[], Service]


def make_service(spec: Any) -> Service:
    """A service from an item of ``services=``."""
    service = spec if isinstance(spec, Service) else spec()
    if not isinstance(service, Service):
        raise TypeError(f"services must be Service instances or factories, got {spec!r}")
    return service
