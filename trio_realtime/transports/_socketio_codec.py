"""Engine.IO v4 and Socket.IO v5 over WebSocket, sans I/O: WebSocket messages in, packets out, and
back. No sockets, no tasks, no clocks; a transport feeds it what it reads and sends what it gets.

This is what socket.io 3.x and 4.x servers speak (``EIO=4``, Socket.IO protocol revision 5).

Engine.IO over WebSocket
========================

One Engine.IO packet is one WebSocket message. A **text** message is the packet type's digit
followed by its data; a **binary** message is a ``MESSAGE`` whose data is the raw bytes (no type
prefix in v4)::

    type  packet   examples                                       class
    0     OPEN     0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],
                    "pingInterval":25000,"pingTimeout":5000,
                    "maxPayload":1000000}                         EioOpen
    1     CLOSE    1                                              EioClose
    2     PING     2   (2probe while upgrading)                   EioPing
    3     PONG     3   (3probe)                                   EioPong
    4     MESSAGE  4hello; or any binary message                  EioMessage
    5     UPGRADE  5                                              EioUpgrade
    6     NOOP     6                                              EioNoop

In v4 the server pings (``2``) and the client answers (``3``).

Socket.IO in Engine.IO messages
===============================

A Socket.IO packet is the data of an Engine.IO ``MESSAGE``, so on the wire it follows a ``4``::

    <type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]

* ``type``: CONNECT 0, DISCONNECT 1, EVENT 2, ACK 3, CONNECT_ERROR 4, BINARY_EVENT 5,
  BINARY_ACK 6.
* ``attachments``: only for types 5 and 6, the number of binary WebSocket messages that follow.
* ``namespace``: left out for the main namespace ``/``; else it starts with ``/`` and ends at the
  first ``,`` (or at the end of the message, when nothing follows it: ``40/admin``). A namespace
  holding a quote, bracket or brace (the sign of a missing ``,`` before the data) or a control
  character is refused both ways.
* ``ack id``: decimal digits, on an EVENT that asks for an acknowledgement and on every ACK.
* ``JSON data``: CONNECT an optional object (the client's auth payload, the server's
  ``{"sid": ...}``); DISCONNECT none; EVENT a non-empty array whose first element is the event
  name; ACK an array, possibly empty; CONNECT_ERROR an object (``{"message": ...}``; a string from
  older servers).

Examples, as WebSocket messages (``Socket.IO packet`` = the message without its leading ``4``)::

    40                                  CONNECT to /                   SioConnect("/")
    40/admin,{"token":"123"}            CONNECT to /admin, with auth   SioConnect("/admin", {...})
    40{"sid":"wZX3oN0bSVIhsaknAAAI"}    the server's answer            SioConnect("/", {"sid": ...})
    44{"message":"Not authorized"}      CONNECT_ERROR                  SioConnectError("/", {...})
    41/admin,                           DISCONNECT from /admin         SioDisconnect("/admin")
    42["hey","Jude"]                    EVENT                          SioEvent("/", ["hey", "Jude"])
    42/admin,13["tellme"]               EVENT asking for ack 13        SioEvent("/admin", [...], 13)
    43/admin,13["bar"]                  ACK 13                         SioAck("/admin", ["bar"], 13)

Binary data: an EVENT or ACK whose data holds bytes anywhere (nested in arrays and objects) is
sent as a BINARY_EVENT or BINARY_ACK. Each bytes value becomes ``{"_placeholder":true,"num":i}``
(``i`` counting from 0 in document order) and travels as the i-th of the binary WebSocket messages
that follow the text one::

    451-["baz",{"_placeholder":true,"num":0}]     then the binary message 01 02 03 04
    461-/admin,1[{"_placeholder":true,"num":0}]   then one binary message

:class:`SioEvent` and :class:`SioAck` stand for both forms: encoding picks the binary one when
the data holds ``bytes``, ``bytearray`` or ``memoryview`` values, and decoding gives ``bytes``
where the placeholders were.

Decoding
========

:class:`MessageDecoder` reads the WebSocket messages of a connection in order. It returns Engine.IO
packets other than MESSAGE as they are, and the Socket.IO packet a MESSAGE holds; for a binary
packet it returns ``None`` for the header and for each attachment but the last, which completes the
packet (Engine.IO control packets such as a PING may come in between; another Socket.IO packet may
not). :class:`SioDecoder` is the same state machine for Socket.IO alone, and :func:`decode_eio`
reads one Engine.IO packet.

Whatever the input, decoding returns packets or raises
:class:`~trio_realtime.RemoteProtocolError`, whose ``field`` names the part at fault (``type``,
``attachments``, ``namespace``, ``ack_id``, ``data`` or a path inside it such as ``data[1].file``,
or an OPEN packet's ``pingInterval``...); the link must then be closed. Limits: ``max_bytes`` on the
UTF-8 size of each text message (1,000,000 by default, Engine.IO's default ``maxPayload``; closes
with 1009) and ``max_attachments`` per binary packet (1,000 by default). Encoding refuses what the
decoder would refuse with :class:`~trio_realtime.LocalProtocolError`.

Encoding
========

:func:`encode_eio` and :func:`encode_sio` encode any packet; :func:`encode_sio_messages` gives the
WebSocket messages of a Socket.IO packet. What a client sends has a helper each:
:func:`connect_message` (with an auth payload and connection-state-recovery ``pid`` and
``offset``), :func:`event_messages`, :func:`ack_messages`, :func:`disconnect_message` and
:func:`pong_message`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, Final, NoReturn, TypeAlias

import attrs
import orjson

from .._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_ATTACHMENTS",
    "DEFAULT_MAX_BYTES",
    "MAX_ACK_ID",
    "EioClose",
    "EioMessage",
    "EioNoop",
    "EioOpen",
    "EioPacket",
    "EioPing",
    "EioPong",
    "EioType",
    "EioUpgrade",
    "MessageDecoder",
    "SioAck",
    "SioConnect",
    "SioConnectError",
    "SioDecoder",
    "SioDisconnect",
    "SioEvent",
    "SioPacket",
    "SioType",
    "ack_messages",
    "connect_message",
    "decode_eio",
    "disconnect_message",
    "encode_eio",
    "encode_sio",
    "encode_sio_messages",
    "event_messages",
    "pong_message",
]

#: Longest text message read by default, in UTF-8 bytes: Engine.IO's default ``maxPayload``.
DEFAULT_MAX_BYTES: Final = 1_000_000
#: Most binary attachments one packet may announce by default.
DEFAULT_MAX_ATTACHMENTS: Final = 1000
#: Largest ack id: ids are JavaScript numbers on the other side, exact up to 2**53 - 1.
MAX_ACK_ID: Final = 2**53 - 1
_MAX_ACK_DIGITS: Final = len(str(MAX_ACK_ID))
#: WebSocket close code for a message over ``max_bytes``.
_MESSAGE_TOO_BIG: Final = 1009


class EioType(enum.IntEnum):
    """Engine.IO v4 packet types (the first character of a text message)."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class SioType(enum.IntEnum):
    """Socket.IO v5 packet types (the first character of a Socket.IO packet)."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


# --- Engine.IO packets ---------------------------------------------------------------------------


@attrs.frozen
class EioOpen:
    """The server's handshake, the first packet of a connection (``0{...}``).

    Attributes:
        sid: the Engine.IO session id.
        upgrades: transports the session may upgrade to (empty on a WebSocket-only session).
        ping_interval_ms: the server pings every this many milliseconds (``pingInterval``).
        ping_timeout_ms: the server waits this long for the pong (``pingTimeout``); a client
            hearing no ping for ``ping_interval_ms + ping_timeout_ms`` may take the link as dead.
        max_payload: the most bytes per HTTP long-polling payload (``maxPayload``); ``None`` when
            the server did not send it (servers before socket.io 4.1 did not).
    """

    sid: str
    ping_interval_ms: int
    ping_timeout_ms: int
    upgrades: tuple[str, ...] = ()
    max_payload: int | None = None


@attrs.frozen
class EioClose:
    """The transport is being closed (``1``)."""


@attrs.frozen
class EioPing:
    """A heartbeat from the server (``2``), or the probe of an upgrade (``2probe``)."""

    data: str = ""


@attrs.frozen
class EioPong:
    """The answer to a ping (``3``, ``3probe``)."""

    data: str = ""


@attrs.frozen
class EioMessage:
    """A message: text (``4...``) or a binary WebSocket message (raw bytes, no prefix)."""

    data: str | bytes


@attrs.frozen
class EioUpgrade:
    """Completes an upgrade from long-polling (``5``)."""


@attrs.frozen
class EioNoop:
    """Does nothing; ends a long-poll during an upgrade (``6``)."""


EioPacket: TypeAlias = EioOpen | EioClose | EioPing | EioPong | EioMessage | EioUpgrade | EioNoop


# --- Socket.IO packets ---------------------------------------------------------------------------


@attrs.frozen
class SioConnect:
    """CONNECT: a client asks to join ``namespace`` (``data``: its auth payload, if any); the server
    accepts with ``data`` ``{"sid": ...}`` (and ``"pid"`` under connection state recovery)."""

    namespace: str = "/"
    data: dict[str, Any] | None = None


@attrs.frozen
class SioDisconnect:
    """DISCONNECT: either side leaves ``namespace``; the link may stay for other namespaces."""

    namespace: str = "/"


@attrs.frozen
class SioEvent:
    """EVENT (or BINARY_EVENT): ``args`` is the whole data array, the event name first
    (``["chat", {"text": "hi"}]``). ``ack_id`` asks the receiver for an ACK with that id.

    Binary values (``bytes``, ``bytearray``, ``memoryview``) may be anywhere inside ``args``; the
    decoder gives them back as ``bytes``.
    """

    namespace: str
    args: list[Any]
    ack_id: int | None = None

    @property
    def event(self) -> str:
        """The event name, ``args[0]``."""
        name: str = self.args[0]
        return name

    @property
    def params(self) -> list[Any]:
        """The arguments after the event name, ``args[1:]``."""
        return self.args[1:]


@attrs.frozen
class SioAck:
    """ACK (or BINARY_ACK): the answer to the EVENT that asked with ``ack_id``; ``args`` may be
    empty and may hold binary values, like :class:`SioEvent`'s."""

    namespace: str
    args: list[Any]
    ack_id: int


@attrs.frozen
class SioConnectError:
    """CONNECT_ERROR: the server refused a CONNECT to ``namespace``. ``data`` is an object,
    usually ``{"message": ..., "data": ...}`` (a plain string from older servers)."""

    namespace: str
    data: dict[str, Any] | str


SioPacket: TypeAlias = SioConnect | SioDisconnect | SioEvent | SioAck | SioConnectError

_TYPE_NAMES: Final = {t.value: t.name for t in SioType}


# --- shared checks -------------------------------------------------------------------------------

#: What a namespace may not hold: the ',' that ends it, and characters that only appear when the
#: ',' was left out before JSON data (quotes, brackets, braces), or that no path holds (controls).
_NAMESPACE_BAD = re.compile(r'[,"\[\]{}\x00-\x1f\x7f]')


def _fail(message: str, field: str | None = None) -> NoReturn:
    raise RemoteProtocolError(message, field=field)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_size(text: str, max_bytes: int) -> None:
    """Refuse ``text`` if its UTF-8 encoding is longer than ``max_bytes`` (encoding it only when
    its length alone cannot tell)."""
    length = len(text)
    if length <= max_bytes and (text.isascii() or length * 4 <= max_bytes):
        return
    if length > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise RemoteProtocolError(
            f"text message longer than max_bytes ({max_bytes} bytes)", close_code=_MESSAGE_TOO_BIG
        )


def _digits_end(text: str, start: int, limit: int) -> int:
    """The end of the run of ASCII digits at ``start``, looking at no more than ``limit + 1``."""
    end = start
    stop = min(len(text), start + limit + 1)
    while end < stop and "0" <= text[end] <= "9":
        end += 1
    return end


# --- Engine.IO -----------------------------------------------------------------------------------


def _handshake_int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if type(value) is not int:
        _fail(f"expected a positive integer, got {_type_name(value)}", key)
    if value <= 0:
        _fail(f"expected a positive integer, got {value}", key)
    return value


def _decode_open(text: str) -> EioOpen:
    try:
        obj = orjson.loads(text[1:])
    except orjson.JSONDecodeError as exc:
        _fail(f"the OPEN packet's handshake is not valid JSON: {exc}")
    if type(obj) is not dict:
        _fail(f"the OPEN packet's handshake must be an object, got {_type_name(obj)}")
    sid = obj.get("sid")
    if type(sid) is not str or not sid:
        _fail(f"expected a non-empty string, got {_type_name(sid)}", "sid")
    upgrades = obj.get("upgrades", [])
    if type(upgrades) is not list:
        _fail(f"expected an array of strings, got {_type_name(upgrades)}", "upgrades")
    for i, item in enumerate(upgrades):
        if type(item) is not str:
            _fail(f"expected a string, got {_type_name(item)}", f"upgrades[{i}]")
    return EioOpen(
        sid=sid,
        ping_interval_ms=_handshake_int(obj, "pingInterval"),
        ping_timeout_ms=_handshake_int(obj, "pingTimeout"),
        upgrades=tuple(upgrades),
        max_payload=_handshake_int(obj, "maxPayload") if "maxPayload" in obj else None,
    )


def _decode_eio_text(text: str) -> EioPacket:
    """An Engine.IO packet from a text message already checked for size."""
    if not text:
        _fail("empty text message: an Engine.IO packet starts with its type digit")
    kind = text[0]
    if kind == "4":
        return EioMessage(text[1:])
    if kind == "2":
        return EioPing(text[1:])
    if kind == "3":
        return EioPong(text[1:])
    if kind == "0":
        return _decode_open(text)
    if kind in "156":
        if len(text) > 1:
            name = EioType(int(kind)).name
            _fail(f"an Engine.IO {name} packet carries no data, got {len(text) - 1} characters")
        return _EIO_EMPTY[kind]
    _fail(f"unknown Engine.IO packet type {kind!r} (expected 0 to 6)", "type")


_EIO_EMPTY: Final[dict[str, EioPacket]] = {"1": EioClose(), "5": EioUpgrade(), "6": EioNoop()}


def _binary(message: bytes | bytearray | memoryview) -> bytes:
    return message if type(message) is bytes else bytes(message)


def decode_eio(
    message: str | bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> EioPacket:
    """Decode one WebSocket message as an Engine.IO packet: text by its type digit, binary as an
    :class:`EioMessage` holding the bytes. A MESSAGE's data is left as it is (see
    :class:`MessageDecoder` to read the Socket.IO packets in it).

    Raises:
        RemoteProtocolError: an empty message, an unknown type digit, a CLOSE, UPGRADE or NOOP with
            data, an OPEN whose handshake is not a JSON object with ``sid``, ``pingInterval`` and
            ``pingTimeout`` (``field`` names the bad one), a text message over ``max_bytes``.
    """
    if type(message) is str:
        _check_size(message, max_bytes)
        return _decode_eio_text(message)
    if isinstance(message, bytes | bytearray | memoryview):
        return EioMessage(_binary(message))
    _fail(f"a WebSocket message is str or bytes, not {type(message).__name__}")


def encode_eio(packet: EioPacket) -> str | bytes:
    """The WebSocket message of an Engine.IO packet: text, or bytes for a binary
    :class:`EioMessage`.

    Raises:
        LocalProtocolError: ``packet`` is not an Engine.IO packet.
    """
    if isinstance(packet, EioMessage):
        data = packet.data
        return data if isinstance(data, bytes) else "4" + data
    if isinstance(packet, EioPing):
        return "2" + packet.data
    if isinstance(packet, EioPong):
        return "3" + packet.data
    if isinstance(packet, EioOpen):
        handshake: dict[str, Any] = {
            "sid": packet.sid,
            "upgrades": list(packet.upgrades),
            "pingInterval": packet.ping_interval_ms,
            "pingTimeout": packet.ping_timeout_ms,
        }
        if packet.max_payload is not None:
            handshake["maxPayload"] = packet.max_payload
        return "0" + _dumps(handshake)
    if isinstance(packet, EioClose):
        return "1"
    if isinstance(packet, EioUpgrade):
        return "5"
    if isinstance(packet, EioNoop):
        return "6"
    raise LocalProtocolError(f"not an Engine.IO packet: {packet!r}")


# --- Socket.IO decoding --------------------------------------------------------------------------

_MISSING: Final = object()

#: Where a placeholder stands: its container, its index or key there, and its attachment number.
_Slot: TypeAlias = tuple[Any, Any, int]


def _placeholders(data: Any, count: int) -> list[_Slot]:
    """Every placeholder in ``data`` (arrays and objects, any depth), checked: its ``num`` is an
    integer below ``count`` and every attachment has at least one."""
    slots: list[_Slot] = []
    used = bytearray(count)
    stack: list[tuple[Any, str]] = [(data, "data")]
    while stack:
        container, path = stack.pop()
        items = enumerate(container) if type(container) is list else container.items()
        for key, value in items:
            kind = type(value)
            if kind is dict:
                if value.get("_placeholder") is True:
                    num = value.get("num")
                    if type(num) is not int or not 0 <= num < count:
                        where = f"{path}[{key}]" if type(key) is int else f"{path}.{key}"
                        shown = num if type(num) is int else _type_name(num)
                        _fail(
                            f"placeholder number {shown} is not one of the packet's "
                            f"{count} attachments",
                            where,
                        )
                    slots.append((container, key, num))
                    used[num] = 1
                else:
                    stack.append((value, f"{path}[{key}]" if type(key) is int else f"{path}.{key}"))
            elif kind is list:
                stack.append((value, f"{path}[{key}]" if type(key) is int else f"{path}.{key}"))
    unused = used.find(0)
    if unused >= 0:
        _fail(f"attachment {unused} of {count} has no placeholder", "attachments")
    return slots


@attrs.define
class _Partial:
    """A binary packet whose attachments are still arriving."""

    packet: SioEvent | SioAck
    slots: list[_Slot]
    count: int
    received: list[bytes] = attrs.Factory(list)


class SioDecoder:
    """Socket.IO packets from the data of Engine.IO MESSAGEs, in order: text packets with
    :meth:`feed_text`, binary attachments with :meth:`feed_binary`.

    A BINARY_EVENT or BINARY_ACK header is held until its attachments have arrived (the next
    binary messages, as many as it announced); then the packet comes out with ``bytes`` where its
    placeholders were. Each call returns the packet it completed, or ``None``.

    After a :class:`~trio_realtime.RemoteProtocolError` the decoder is back in its first state,
    but the link should be closed: what the peer meant by the rest cannot be known.
    """

    __slots__ = ("_ack_digits", "_count_digits", "_max_attachments", "_max_bytes", "_partial")

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if max_attachments < 0:
            raise ValueError(f"max_attachments must be at least 0, got {max_attachments}")
        self._max_bytes = max_bytes
        self._max_attachments = max_attachments
        self._count_digits = len(str(max_attachments))
        self._partial: _Partial | None = None

    @property
    def awaiting(self) -> int:
        """How many binary attachments the packet being read still waits for (0: none)."""
        partial = self._partial
        return 0 if partial is None else partial.count - len(partial.received)

    def feed_text(self, text: str) -> SioPacket | None:
        """Read one Socket.IO packet (the data of a text MESSAGE, without its ``4``).

        Returns the packet, or ``None`` for a binary packet's header (its attachments follow).

        Raises:
            RemoteProtocolError: a binary packet is still waiting for attachments, or ``text`` is
                not a valid Socket.IO packet (see the module's documentation), or is over
                ``max_bytes``.
        """
        _check_size(text, self._max_bytes)
        return self._text(text, 0)

    def feed_binary(self, data: bytes | bytearray | memoryview) -> SioPacket | None:
        """Take one binary attachment. Returns the packet it completes, or ``None`` if more are due.

        Raises:
            RemoteProtocolError: no binary packet is waiting for attachments.
        """
        partial = self._partial
        if partial is None:
            _fail("a binary message arrived but no binary packet is waiting for attachments")
        partial.received.append(_binary(data))
        if len(partial.received) < partial.count:
            return None
        self._partial = None
        received = partial.received
        for container, key, num in partial.slots:
            container[key] = received[num]
        return partial.packet

    def _text(self, text: str, start: int) -> SioPacket | None:
        """Decode the Socket.IO packet at ``text[start:]``."""
        if self._partial is not None:
            waiting = self.awaiting
            self._partial = None
            _fail(
                f"a Socket.IO packet arrived while a binary packet still waited for "
                f"{waiting} attachment(s)"
            )
        n = len(text)
        if start >= n:
            _fail("empty Socket.IO packet")
        code = ord(text[start]) - 48
        if not 0 <= code <= 6:
            _fail(f"unknown Socket.IO packet type {text[start]!r} (expected 0 to 6)", "type")
        i = start + 1

        count = 0
        if code >= 5:
            end = _digits_end(text, i, self._count_digits)
            if end == i or end >= n or text[end] != "-":
                if end - i > self._count_digits:
                    _fail(
                        f"more attachments than max_attachments ({self._max_attachments})",
                        "attachments",
                    )
                _fail(
                    f"a {_TYPE_NAMES[code]} packet needs its attachment count and '-' after "
                    "its type",
                    "attachments",
                )
            count = int(text[i:end])
            if count > self._max_attachments:
                _fail(
                    f"{count} attachments is more than max_attachments ({self._max_attachments})",
                    "attachments",
                )
            i = end + 1

        namespace = "/"
        if i < n and text[i] == "/":
            comma = text.find(",", i)
            end = n if comma < 0 else comma
            namespace = text[i:end]
            bad = _NAMESPACE_BAD.search(namespace)
            if bad is not None:
                if bad.group() in '"[]{}':
                    _fail(
                        f"namespace {namespace[:40]!r} is not followed by ','; "
                        "a namespace ends with ',' before an ack id or data",
                        "namespace",
                    )
                _fail(f"namespace {namespace[:40]!r} holds a control character", "namespace")
            i = end + 1

        ack_id: int | None = None
        if i < n and "0" <= text[i] <= "9":
            end = _digits_end(text, i, _MAX_ACK_DIGITS)
            if end - i > _MAX_ACK_DIGITS:
                _fail(f"ack id longer than {_MAX_ACK_DIGITS} digits", "ack_id")
            ack_id = int(text[i:end])
            if ack_id > MAX_ACK_ID:
                _fail(f"ack id {ack_id} is over {MAX_ACK_ID}", "ack_id")
            if code in (0, 1, 4):
                _fail(f"a {_TYPE_NAMES[code]} packet carries no ack id", "ack_id")
            i = end

        data: Any = _MISSING
        if i < n:
            try:
                data = orjson.loads(text[i:])
            except orjson.JSONDecodeError as exc:
                _fail(f"not valid JSON: {exc}", "data")

        if code == 0:
            if data is _MISSING:
                return SioConnect(namespace)
            if type(data) is not dict:
                _fail(f"a CONNECT's data must be an object, got {_type_name(data)}", "data")
            return SioConnect(namespace, data)
        if code == 1:
            if data is not _MISSING:
                _fail("a DISCONNECT carries no data", "data")
            return SioDisconnect(namespace)
        if code == 4:
            if type(data) is not dict and type(data) is not str:
                got = "nothing" if data is _MISSING else _type_name(data)
                _fail(f"a CONNECT_ERROR's data must be an object or a string, got {got}", "data")
            return SioConnectError(namespace, data)

        packet: SioEvent | SioAck
        if code == 2 or code == 5:
            if type(data) is not list or not data or type(data[0]) is not str:
                if type(data) is list:
                    got = (
                        "[]"
                        if not data
                        else f"an array whose first element is {_type_name(data[0])}"
                    )
                else:
                    got = "nothing" if data is _MISSING else _type_name(data)
                _fail(
                    f"an EVENT's data must be an array starting with the event name, got {got}",
                    "data",
                )
            packet = SioEvent(namespace, data, ack_id)
        else:
            if ack_id is None:
                _fail("an ACK needs the ack id it answers", "ack_id")
            if type(data) is not list:
                got = "nothing" if data is _MISSING else _type_name(data)
                _fail(f"an ACK's data must be an array, got {got}", "data")
            packet = SioAck(namespace, data, ack_id)
        if code < 5:
            return packet
        slots = _placeholders(data, count)
        if count == 0:
            return packet
        self._partial = _Partial(packet, slots, count)
        return None


class MessageDecoder:
    """Reads every WebSocket message of an Engine.IO v4 + Socket.IO v5 connection, in order.

    :meth:`receive` returns, for each message:

    * an Engine.IO packet (:class:`EioOpen`, :class:`EioPing`, :class:`EioClose`...) for a text
      message of any type but MESSAGE;
    * the Socket.IO packet of a text MESSAGE (``4...``);
    * ``None`` for a binary packet's header and for each of its attachments (binary messages) but
      the last, which returns the whole packet.

    Engine.IO packets may come between a binary header and its attachments (they are returned as
    usual); a Socket.IO packet may not, nor may a binary message that no header announced.
    """

    __slots__ = ("_max_bytes", "_sio")

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
    ) -> None:
        self._sio = SioDecoder(max_bytes=max_bytes, max_attachments=max_attachments)
        self._max_bytes = max_bytes

    @property
    def awaiting(self) -> int:
        """How many binary attachments the packet being read still waits for (0: none)."""
        return self._sio.awaiting

    def receive(
        self, message: str | bytes | bytearray | memoryview
    ) -> EioPacket | SioPacket | None:
        """Decode one WebSocket message (``str`` for a text message, bytes for a binary one).

        Raises:
            RemoteProtocolError: as :func:`decode_eio` and :meth:`SioDecoder.feed_text`, and for a
                binary message that no binary packet waits for.
        """
        if type(message) is str:
            _check_size(message, self._max_bytes)
            if message[:1] == "4":
                return self._sio._text(message, 1)
            return _decode_eio_text(message)
        if isinstance(message, bytes | bytearray | memoryview):
            return self._sio.feed_binary(message)
        _fail(f"a WebSocket message is str or bytes, not {type(message).__name__}")


# --- Socket.IO encoding --------------------------------------------------------------------------


def _local(message: str, field: str | None = None) -> NoReturn:
    raise LocalProtocolError(message, field=field)


def _head(code: str, namespace: object) -> str:
    """The type digit and the namespace part, checked."""
    if type(namespace) is not str or not namespace.startswith("/"):
        _local(f"a namespace is a string starting with '/', got {namespace!r}", "namespace")
    if namespace == "/":
        return code
    if not namespace.isascii():
        try:
            namespace.encode()
        except UnicodeEncodeError:
            _local(f"namespace {namespace!r} is not valid Unicode text", "namespace")
    if _NAMESPACE_BAD.search(namespace) is not None:
        _local(
            f"namespace {namespace!r} holds ',', a quote, a bracket, a brace or a control "
            "character",
            "namespace",
        )
    return f"{code}{namespace},"


def _ack_text(ack_id: object) -> str:
    if type(ack_id) is not int or not 0 <= ack_id <= MAX_ACK_ID:
        _local(f"an ack id is an integer from 0 to {MAX_ACK_ID}, got {ack_id!r}", "ack_id")
    return str(ack_id)


def _dumps(data: object) -> str:
    try:
        return orjson.dumps(data).decode()
    except (orjson.JSONEncodeError, TypeError) as exc:
        _local(f"cannot encode as JSON: {exc}", "data")


_PLACEHOLDER_KEY: Final = b'"_placeholder"'


def _dumps_binary(data: object, attachments: list[bytes]) -> str:
    """``data`` as JSON with each binary value replaced by the next placeholder; the values are
    appended to ``attachments`` in the same order. (orjson calls ``default`` for each value it
    cannot encode, in document order, so this is one pass in C when there is no binary.)"""

    def default(value: object) -> dict[str, Any]:
        if isinstance(value, bytes | bytearray | memoryview):
            attachments.append(bytes(value))
            return {"_placeholder": True, "num": len(attachments) - 1}
        raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")

    try:
        encoded = orjson.dumps(data, default=default)
    except (orjson.JSONEncodeError, TypeError) as exc:
        _local(f"cannot encode as JSON: {exc}", "data")
    if attachments and encoded.count(_PLACEHOLDER_KEY) != len(attachments):
        _check_no_lookalike(data)
    return encoded.decode()


def _check_no_lookalike(data: object) -> None:
    """Refuse an object of the caller's own with ``"_placeholder": true``: in a binary packet the
    receiver would take it for a placeholder."""
    stack = [data]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            if value.get("_placeholder") is True:
                _local(
                    'an object with "_placeholder": true cannot be sent with binary data '
                    "(the receiver would read it as an attachment)",
                    "data",
                )
            stack.extend(value.values())
        elif type(value) is list or type(value) is tuple:
            stack.extend(value)


def _check_args(args: object, *, event: bool) -> None:
    if not isinstance(args, list | tuple):
        _local(f"args must be a list, got {type(args).__name__}", "args")
    if event and (not args or type(args[0]) is not str):
        _local("an EVENT's args must start with the event name (a string)", "args")


def encode_sio(packet: SioPacket) -> tuple[str, list[bytes]]:
    """Encode a Socket.IO packet: its text (without the Engine.IO ``4``) and its binary attachments,
    in order (empty unless the packet's data holds binary values).

    Data is encoded by orjson, as JavaScript's ``JSON.stringify`` would: tuples become arrays, and
    NaN and infinities become ``null``.

    Raises:
        LocalProtocolError: a namespace that does not start with ``/`` or holds a character the
            decoder refuses, an ack id out of ``[0, MAX_ACK_ID]``, EVENT args that do not start with
            a string, data JSON cannot carry (``field`` says which), binary data in a CONNECT or
            CONNECT_ERROR, or an object with ``"_placeholder": true`` beside binary data.
    """
    if isinstance(packet, SioEvent | SioAck):
        is_event = isinstance(packet, SioEvent)
        args = packet.args
        _check_args(args, event=is_event)
        ack = "" if is_event and packet.ack_id is None else _ack_text(packet.ack_id)
        attachments: list[bytes] = []
        body = _dumps_binary(args, attachments)
        if attachments:
            code = f"{5 if is_event else 6}{len(attachments)}-"
        else:
            code = "2" if is_event else "3"
        return _head(code, packet.namespace) + ack + body, attachments
    if isinstance(packet, SioConnect):
        head = _head("0", packet.namespace)
        if packet.data is None:
            return head, []
        if not isinstance(packet.data, dict):
            _local(f"a CONNECT's data must be a dict, got {type(packet.data).__name__}", "data")
        return head + _dumps(packet.data), []
    if isinstance(packet, SioDisconnect):
        return _head("1", packet.namespace), []
    if isinstance(packet, SioConnectError):
        if not isinstance(packet.data, dict | str):
            _local(
                f"a CONNECT_ERROR's data must be a dict or a str, got {type(packet.data).__name__}",
                "data",
            )
        return _head("4", packet.namespace) + _dumps(packet.data), []
    _local(f"not a Socket.IO packet: {packet!r}")


def encode_sio_messages(packet: SioPacket) -> list[str | bytes]:
    """The WebSocket messages that carry a Socket.IO packet: its text in an Engine.IO MESSAGE
    (``"4" + text``), then each binary attachment as a binary message.

    Raises:
        LocalProtocolError: as :func:`encode_sio`.
    """
    text, attachments = encode_sio(packet)
    return ["4" + text, *attachments]


# --- what a client sends -------------------------------------------------------------------------


def connect_message(
    namespace: str = "/",
    auth: Mapping[str, Any] | None = None,
    *,
    pid: str | None = None,
    offset: str | None = None,
) -> str:
    """The CONNECT a client sends to join ``namespace``: ``40`` or ``40/chat,{"token":"..."}``.

    ``auth`` is the payload the server's middleware reads (``socket.handshake.auth``). ``pid`` and
    ``offset`` ask the server to recover a session (socket.io's connection state recovery, 4.6+):
    ``pid`` is the private id from the server's CONNECT, ``offset`` the last offset received;
    they are added to the auth payload (``{"token":...,"pid":...,"offset":...}``).

    Raises:
        LocalProtocolError: ``auth`` holds ``pid`` or ``offset`` as well, ``offset`` without
            ``pid``, or as :func:`encode_sio`.
    """
    data = None if auth is None else dict(auth)
    if pid is not None:
        data = {} if data is None else data
        for key, value in (("pid", pid), ("offset", offset)):
            if value is None:
                continue
            if key in data:
                _local(f"auth already holds {key!r}", key)
            data[key] = value
    elif offset is not None:
        _local("offset is only sent with the pid of the session to recover", "offset")
    return "4" + encode_sio(SioConnect(namespace, data))[0]


def event_messages(
    event: str, *args: Any, namespace: str = "/", ack_id: int | None = None
) -> list[str | bytes]:
    """The messages of an EVENT: ``42/chat,7["event",...args]`` (then binary attachments, if
    ``args`` hold binary values). With ``ack_id``, the server answers with an ACK of that id.

    Raises:
        LocalProtocolError: as :func:`encode_sio`.
    """
    return encode_sio_messages(SioEvent(namespace, [event, *args], ack_id))


def ack_messages(ack_id: int, *args: Any, namespace: str = "/") -> list[str | bytes]:
    """The messages of an ACK answering the server's EVENT ``ack_id``: ``43/chat,7[...args]``
    (then binary attachments, if ``args`` hold binary values).

    Raises:
        LocalProtocolError: as :func:`encode_sio`.
    """
    return encode_sio_messages(SioAck(namespace, list(args), ack_id))


def disconnect_message(namespace: str = "/") -> str:
    """The DISCONNECT a client sends to leave ``namespace``: ``41`` or ``41/chat,``."""
    return "4" + encode_sio(SioDisconnect(namespace))[0]


def pong_message(data: str = "") -> str:
    """The answer to the server's ping: ``3`` (``3probe`` for an upgrade's probe)."""
    return "3" + data
