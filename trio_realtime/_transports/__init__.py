"""Transports: the small interface the connection talks through, and its implementations."""

from ._base import Connector as Connector
from ._base import Transport as Transport
from ._base import TransportClosed as TransportClosed
from ._memory import MemoryTransport as MemoryTransport
from ._memory import memory_transport_pair as memory_transport_pair
from ._websocket import RECEIVE_BUFFER_BYTES as RECEIVE_BUFFER_BYTES
from ._websocket import SUBPROTOCOL as SUBPROTOCOL
from ._websocket import WebSocketTransport as WebSocketTransport
from ._websocket import connect_websocket as connect_websocket
