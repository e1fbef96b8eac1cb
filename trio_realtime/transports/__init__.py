"""Transports: the small interface a connection talks through, its implementations, and the
registry that picks one by URL scheme.

A :class:`Transport` carries whole messages both ways and closes with a code; a :data:`Connector`
opens one. ``open_realtime(url)`` takes the connector registered for the URL's scheme
(``ws://``/``wss://`` and Socket.IO's ``socketio://``/``socketios://`` built in; :func:`binary`
and :func:`from_binary` carry bytes through the latter); :func:`register_transport` adds a scheme, and
``trio_realtime.testing.check_transport`` checks a new transport against the contract.
"""

from .._errors import LinkClosed as LinkClosed
from ._base import Connector as Connector
from ._base import Transport as Transport
from ._memory import MemoryTransport as MemoryTransport
from ._memory import memory_transport_pair as memory_transport_pair
from ._registry import ConnectorFactory as ConnectorFactory
from ._registry import connector_for as connector_for
from ._registry import register_transport as register_transport
from ._registry import registered_schemes as registered_schemes
from ._socketio import binary as binary
from ._socketio import from_binary as from_binary
from ._websocket import RECEIVE_BUFFER_BYTES as RECEIVE_BUFFER_BYTES
from ._websocket import SUBPROTOCOL as SUBPROTOCOL
from ._websocket import WebSocketTransport as WebSocketTransport
from ._websocket import connect_websocket as connect_websocket
