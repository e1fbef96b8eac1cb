"""Which connector opens a URL: a registry from URL scheme to connector factory.

``open_realtime(url)`` asks :func:`connector_for` for a connector, so a new transport (Socket.IO,
QUIC, ...) plugs in with one :func:`register_transport` call and no change to the connection. A
factory checks the URL it is given (each transport knows its own URLs) and returns the
:data:`Connector` that opens links to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._errors import ConfigError
from ._base import Connector, Transport
from ._socketio import RecoveryState, connect_socketio, parse_socketio_url
from ._websocket import connect_websocket

if TYPE_CHECKING:
    from .._config import RealtimeConfig

__all__ = ["ConnectorFactory", "connector_for", "register_transport", "registered_schemes"]

#: Given a URL of its scheme and the connection's configuration, returns the connector that opens
#: links to it; raises :class:`ValueError` (or :class:`~trio_realtime.ConfigError`) for a URL it
#: cannot open.
ConnectorFactory = Callable[[str, "RealtimeConfig"], Connector]

_FACTORIES: dict[str, ConnectorFactory] = {}


def register_transport(scheme: str, factory: ConnectorFactory, *, replace: bool = False) -> None:
    """Open URLs of ``scheme`` (``"socketio"`` for ``socketio://...``) with connectors made by
    ``factory``. Registering a scheme twice is refused unless ``replace`` is true."""
    if not isinstance(scheme, str) or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise ValueError(f"scheme must be a lower-case URL scheme, got {scheme!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {factory!r}")
    if scheme in _FACTORIES and not replace:
        raise ValueError(f"a transport is already registered for {scheme}://")
    _FACTORIES[scheme] = factory


def registered_schemes() -> list[str]:
    """The URL schemes a connector is registered for, sorted."""
    return sorted(_FACTORIES)


def connector_for(url: str, config: RealtimeConfig) -> Connector:
    """The connector for ``url``, by its scheme.

    Raises:
        ConfigError: no transport is registered for the scheme, or its factory refused the URL.
    """
    if not isinstance(url, str):
        raise ConfigError("url", f"must be a string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    factory = _FACTORIES.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in registered_schemes())
        raise ConfigError("url", f"no transport for {url!r} (known schemes: {known})")
    try:
        return factory(url, config)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError("url", str(exc)) from None


def _websocket_factory(url: str, config: RealtimeConfig) -> Connector:
    """``ws://`` and ``wss://`` (``use_tls`` turns ``ws://`` into ``wss://``)."""
    if not re.match(r"^wss?://[^/?#]+", url, re.IGNORECASE):
        raise ValueError(f"a WebSocket URL needs a host: ws://host[:port]/path, got {url!r}")
    if config.use_tls and url.lower().startswith("ws://"):
        url = "wss://" + url[len("ws://") :]

    async def connect(nursery: trio.Nursery, _url: str, connect_timeout: float) -> Transport:
        return await connect_websocket(
            nursery, url, connect_timeout, ssl_context=config.ssl_context
        )

    return connect


register_transport("ws", _websocket_factory)
register_transport("wss", _websocket_factory)


class _SocketIOConnector:
    """``socketio://`` and ``socketios://``: a connector that keeps the Socket.IO recovery state
    (the session pid and offsets) across its links, in the journal directory once the
    connection names it (:meth:`use_directory`)."""

    def __init__(self, url: str, config: RealtimeConfig) -> None:
        if config.use_tls and url.lower().startswith("socketio://"):
            url = "socketios://" + url[len("socketio://") :]
        parse_socketio_url(url)  # refuse a bad URL now
        self.url = url
        self.config = config
        self.state = RecoveryState()

    def use_directory(self, directory: str) -> None:
        self.state.directory = directory
        self.state.load()

    async def __call__(self, nursery: trio.Nursery, _url: str, connect_timeout: float) -> Transport:
        return await connect_socketio(
            nursery,
            self.url,
            connect_timeout,
            state=self.state,
            ssl_context=self.config.ssl_context,
        )


register_transport("socketio", _SocketIOConnector)
register_transport("socketios", _SocketIOConnector)
