"""The Socket.IO transport: our protocol, spoken to a stock Socket.IO v4 server.

A stock Socket.IO server knows nothing of seqs, resumes or channel logs, so this transport is a
translator: the connection above it speaks the trio_realtime protocol as with any transport, and
:class:`SocketIOBridge` (sans I/O) turns each of its frames into Socket.IO packets and each
packet from the server into our frames (PROTOCOL.md section 8):

===================================== ===================================================
ours (client -> server)               Socket.IO
===================================== ===================================================
``resume``                            ``40/ns,{"token": ..., "pid": ..., "offset": ...}``
``event`` seq N                       ``42/ns,N["event", <data>]`` (emit with ack id N)
``skip`` seq N                        nothing (acked at once: the server never knew it)
``subscribe`` / ``unsubscribe``       nothing (answered here: one channel, the namespace)
``ping``                              nothing (answered here; Engine.IO has its own)
===================================== ===================================================

===================================== ===================================================
Socket.IO (server -> client)          ours
===================================== ===================================================
``40{"sid", "pid"?}``                 ``resume_response`` (``ack_seq``: the client's own)
``44{"message"}``                     fatal ``error`` (``unauthorized`` closes 4001)
``43/ns,N[...]``                      ``ack``: cumulative over the seqs acked so far
``42/ns,["event", ...args, offset?]`` ``event`` on the channel named after the namespace
Engine.IO ping ``2``                  answered with ``3``; silence closes the link
===================================== ===================================================

**Envelopes** (on by default, ``?envelope=0`` in the URL turns them off): the event's data is
``{"channel", "idempotency_key", "data"}``, so a server can deduplicate on the key; off, it is
the payload itself. **Binary**: a payload may hold ``{"$binary": "<base64>"}`` objects (see
:func:`binary`); they travel as Socket.IO attachments, and attachments from the server arrive as
such objects.

**Downstream recovery**: with the server's connectionStateRecovery, every event carries its
offset (a string) as its last argument. Events get contiguous integer offsets here, under the
session's ``pid`` as epoch; the Socket.IO offset of each is kept in ``socketio-state.json`` in
the journal directory (in memory without one), and the next ``resume`` reconnects with the pid
and the Socket.IO offset of the last event the application processed. The server's answer says
whether it recovered (its CONNECT carries the same pid), reported as ``recovered`` and, when it
could not, a ``Gap``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
import trio_websocket

from .._errors import LinkClosed, LocalProtocolError, RemoteProtocolError
from .._protocol import (
    Ack,
    ChannelResume,
    ClientFrame,
    Error,
    Message,
    Ping,
    Pong,
    Resume,
    ResumeResponse,
    ServerFrame,
    Skip,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
    decode_client_message,
    encode_frame,
)
from ._socketio_codec import (
    EioClose,
    EioOpen,
    EioPing,
    MessageDecoder,
    SioAck,
    SioConnect,
    SioConnectError,
    SioDisconnect,
    SioEvent,
    ack_messages,
    connect_message,
    decode_eio,
    event_messages,
    pong_message,
)
from ._websocket import WebSocketTransport, connect_websocket

__all__ = [
    "SioLink",
    "SocketIOBridge",
    "SocketIOMessages",
    "SocketIOTransport",
    "binary",
    "connect_socketio",
    "connect_socketio_messages",
    "from_binary",
]

#: Socket.IO offsets kept per namespace (for the last events received, the application may not
#: have processed yet).
KEEP_OFFSETS = 4096
STATE_FILE = "socketio-state.json"
#: Events a recovering server may replay before its CONNECT answer (held until then).
MAX_EARLY = 100_000
#: Largest message taken from the server (as the WebSocket transport's limit).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Shortest time between two writes of the recovery state.
SAVE_INTERVAL = 0.2


def binary(data: bytes) -> dict[str, str]:
    """A payload part that travels as a Socket.IO binary attachment."""
    return {"$binary": base64.b64encode(data).decode("ascii")}


def from_binary(value: Any) -> bytes:
    """The bytes of a ``{"$binary": ...}`` object (as received from the server)."""
    return base64.b64decode(value["$binary"])


def _to_wire(value: Any) -> Any:
    """Our JSON payload as Socket.IO data: ``{"$binary"}`` objects become bytes."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$binary"), str):
            return base64.b64decode(value["$binary"])
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_wire(v) for v in value]
    return value


def _from_wire(value: Any) -> Any:
    """Socket.IO data as our JSON payload: bytes become ``{"$binary"}`` objects."""
    if isinstance(value, bytes | bytearray):
        return binary(bytes(value))
    if isinstance(value, dict):
        return {k: _from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


@attrs.define
class RecoveryState:
    """The session pid and, per integer offset given to the application, the Socket.IO offset
    (persisted in ``directory`` when there is one)."""

    directory: str | None = None
    pid: str | None = None
    offsets: OrderedDict[int, str] = attrs.Factory(OrderedDict)

    def load(self) -> None:
        if self.directory is None:
            return
        try:
            with open(os.path.join(self.directory, STATE_FILE), encoding="utf-8") as f:
                saved = json.load(f)
            self.pid = saved.get("pid")
            self.offsets = OrderedDict((int(k), v) for k, v in saved.get("offsets", []))
        except (OSError, ValueError, TypeError, AttributeError):
            self.pid, self.offsets = None, OrderedDict()

    def snapshot(self) -> bytes:
        return json.dumps({"pid": self.pid, "offsets": list(self.offsets.items())}).encode()

    def write(self, data: bytes) -> None:
        """Write a :meth:`snapshot` (a rename over the old file: a crash leaves one or the
        other). A state lost or older than the application's position only costs a resume
        without recovery, reported as a gap."""
        if self.directory is None:
            return
        path = os.path.join(self.directory, STATE_FILE)
        staged = f"{path}.{secrets.token_hex(4)}.tmp"  # an old link's last write may overlap
        with contextlib.suppress(OSError):
            with open(staged, "wb") as f:
                f.write(data)
            os.replace(staged, path)

    def note(self, offset: int, sio_offset: str) -> None:
        self.offsets[offset] = sio_offset
        while len(self.offsets) > KEEP_OFFSETS:
            self.offsets.popitem(last=False)


_RECOVERED = ChannelResume("", 0, True)


class SocketIOBridge:
    """Our protocol on one side, Socket.IO packets on the other (sans I/O; see the module)."""

    def __init__(
        self, namespace: str = "/", *, envelope: bool = True, state: RecoveryState
    ) -> None:
        self.namespace = namespace
        self.channel = namespace
        self.envelope = envelope
        self.state = state
        self.open: EioOpen | None = None
        self._resume: Resume | None = None
        self._connected = False
        self._acked = 0  # cumulative ack watermark reported to the connection
        self._done: set[int] = set()  # seqs acked (or skipped) above it
        self._duplicates: list[int] = []
        self._head = 0  # integer offset of the last downstream event
        self._epoch = ""
        self._recovery = False  # the server runs connectionStateRecovery (events carry offsets)
        self._asked_recovery = False
        self._save_due = False
        self._early: list[SioEvent] = []  # events received before the CONNECT answer
        self._sent_max = 0  # highest ack id emitted on this link

    # --- our frames -> Socket.IO -------------------------------------------------------------

    def from_client(
        self, frames: Sequence[ClientFrame]
    ) -> tuple[list[str | bytes], list[ServerFrame]]:
        """What to send the server for the connection's ``frames``, and what to answer here."""
        out: list[str | bytes] = []
        answers: list[ServerFrame] = []
        completed = False
        for frame in frames:
            if isinstance(frame, UpstreamEvent):
                try:
                    messages = self._emit(frame)
                except (ValueError, LocalProtocolError) as exc:  # bad base64, a lookalike, ...
                    answers.append(Error("invalid_payload", str(exc)[:200], seq=frame.seq))
                    self._done.add(frame.seq)
                    completed = True
                    continue
                limit = self.open.max_payload if self.open and self.open.max_payload else None
                size = sum(len(m) for m in messages)
                if limit is not None and size > limit:
                    message = f"event of {size} bytes over the server's maxPayload ({limit})"
                    answers.append(Error("too_large", message, seq=frame.seq))
                    self._done.add(frame.seq)
                    completed = True
                    continue
                self._sent_max = max(self._sent_max, frame.seq)
                out.extend(messages)
            elif isinstance(frame, Skip):
                self._done.add(frame.seq)
                completed = True
            elif isinstance(frame, Resume):
                out.append(self._connect(frame))
            elif isinstance(frame, Subscribe):
                if frame.channel != self.channel:  # a stock server has one stream: the namespace
                    message = f"a Socket.IO link carries one channel, {self.channel!r}"
                    answers.append(Error("invalid_name", message, rid=frame.rid))
                    continue
                recovered = frame.offset is None or (
                    frame.epoch == self._epoch and frame.offset <= self._head
                )
                answers.append(
                    Subscribed(frame.rid, frame.channel, self._epoch, self._head, recovered)
                )
            elif isinstance(frame, Unsubscribe):
                answers.append(Unsubscribed(frame.rid, frame.channel))
            elif isinstance(frame, Ping):
                answers.append(Pong(frame.t))
            # Presence, typing and read receipts have no Socket.IO counterpart: not sent.
        if completed:
            answers.extend(self._advance())
        return out, answers

    def _emit(self, frame: UpstreamEvent) -> list[str | bytes]:
        payload = _to_wire(frame.payload)
        if self.envelope:
            data: Any = {
                "channel": frame.channel,
                "idempotency_key": frame.idempotency_key,
                "data": payload,
            }
        else:
            data = payload
        return event_messages(frame.event, data, namespace=self.namespace, ack_id=frame.seq)

    def _connect(self, frame: Resume) -> str:
        self._resume = frame
        self._acked = frame.last_ack_seq
        self._sent_max = frame.last_ack_seq
        self._done.clear()
        auth: dict[str, Any] = {}
        if frame.token is not None:
            auth["token"] = frame.token
        position = frame.channels.get(self.channel)
        pid = offset = None
        if position is not None and self.state.pid is not None and position.epoch == self.state.pid:
            sio_offset = self.state.offsets.get(position.offset)
            if sio_offset is not None:
                pid, offset = self.state.pid, sio_offset
        self._asked_recovery = pid is not None
        self._head = position.offset if position is not None else 0
        return connect_message(self.namespace, auth or None, pid=pid, offset=offset)

    # --- Socket.IO -> our frames -------------------------------------------------------------

    def from_server(self, packet: object) -> tuple[list[str | bytes], list[ServerFrame]]:
        """What to send back for ``packet`` (a Socket.IO packet: :class:`SioLink` answers the
        Engine.IO ones itself) and what to hand the connection."""
        namespace = getattr(packet, "namespace", self.namespace)
        if namespace != self.namespace:
            return [], []
        if isinstance(packet, SioConnect):
            response = self._connected_as(packet.data or {})
            answer: list[ServerFrame] = [response]
            early, self._early = self._early, []
            if response.channels.get(self.channel, _RECOVERED).recovered:
                answer.extend(self._message(event) for event in early)
            return [], answer
        if isinstance(packet, SioConnectError):
            data = packet.data
            message = data.get("message", "") if isinstance(data, dict) else str(data)
            # Socket.IO has no codes: every refusal is the middleware's (a token refused,
            # refreshed through the delegate, as a native 4001) but a namespace that does not
            # exist, which retrying cannot fix.
            code = "forbidden" if message == "Invalid namespace" else "unauthorized"
            return [], [Error(code, f"the Socket.IO server refused: {message}", fatal=True)]
        if isinstance(packet, SioDisconnect):
            raise LinkClosed(1000, "the Socket.IO server disconnected the namespace")
        if isinstance(packet, SioAck):
            return [], self._acked_by_server(packet)
        if isinstance(packet, SioEvent):
            reply = (
                ack_messages(packet.ack_id, namespace=self.namespace)
                if packet.ack_id is not None
                else []
            )
            if not self._connected:  # a recovering server replays before its CONNECT answer
                if len(self._early) >= MAX_EARLY:
                    raise RemoteProtocolError(f"over {MAX_EARLY} events before the CONNECT answer")
                self._early.append(packet)
                return reply, []
            return reply, [self._message(packet)]
        return [], []

    def _connected_as(self, data: dict[str, Any]) -> ResumeResponse:
        resume = self._resume
        if resume is None:
            raise RemoteProtocolError("a CONNECT before the client asked to connect")
        sid = str(data.get("sid", ""))
        pid = data.get("pid")
        self._recovery = isinstance(pid, str)
        recovered = self._recovery and self._asked_recovery and pid == self.state.pid
        if not recovered:
            self._head = 0
            self.state.offsets.clear()  # offsets of another session: never to be resumed from
        self.state.pid = pid if isinstance(pid, str) else None
        self._epoch = self.state.pid or sid
        self._connected = True
        channels = {
            name: ChannelResume(
                self._epoch if name == self.channel else "none",
                self._head if name == self.channel else 0,
                recovered if name == self.channel else False,
            )
            for name in resume.channels
        }
        interval = self.open.ping_interval_ms if self.open is not None else 25_000
        limit = self.open.max_payload if self.open and self.open.max_payload else 1_000_000
        return ResumeResponse(
            resume.client_id,
            sid,
            resume.last_ack_seq,
            interval,
            limit,
            int(time.time() * 1000),
            channels,
        )

    def _acked_by_server(self, packet: SioAck) -> list[ServerFrame]:
        if not self._acked < packet.ack_id <= self._sent_max:
            return []  # old, or never emitted on this link: nothing to resolve
        self._done.add(packet.ack_id)
        first = packet.args[0] if packet.args else None
        if isinstance(first, dict) and first.get("duplicate") is True:
            self._duplicates.append(packet.ack_id)
        return self._advance()

    def _advance(self) -> list[ServerFrame]:
        start = self._acked
        while self._acked + 1 in self._done:
            self._acked += 1
            self._done.discard(self._acked)
        if self._acked == start:
            return []
        duplicates = tuple(d for d in self._duplicates if d <= self._acked)
        self._duplicates = [d for d in self._duplicates if d > self._acked]
        return [Ack(self._acked, duplicates)]

    def _message(self, packet: SioEvent) -> Message:
        args = list(packet.params)
        # A recovering server appends the offset to what it broadcasts, never to an event that
        # asks for an ack.
        if self._recovery and packet.ack_id is None and args and isinstance(args[-1], str):
            sio_offset: str | None = args.pop()
        else:
            sio_offset = None
        self._head += 1
        if sio_offset is not None:
            self.state.note(self._head, sio_offset)
            self._save_due = True
        payload = _from_wire(args[0] if len(args) == 1 else args)
        key = None
        if (
            self.envelope
            and isinstance(payload, dict)
            and payload.keys() == {"channel", "idempotency_key", "data"}
            and isinstance(payload["idempotency_key"], str)
        ):
            key = payload["idempotency_key"]
            payload = payload["data"]
        now = int(time.time() * 1000)
        return Message(
            self.channel, self._head, self._epoch, packet.event, payload, now, None, key, now
        )

    def take_save(self) -> bool:
        """Whether the recovery state changed since the last call (the transport saves it)."""
        due, self._save_due = self._save_due, False
        return due


class SioLink:
    """An Engine.IO v4 session over a WebSocket, the layer both Socket.IO transports run on:
    answers the server's pings, drops the link when the server falls silent (its pingInterval +
    pingTimeout, with some slack), hands the Socket.IO packets over in order, and sends whole
    packets (a binary event's messages are never interleaved with another's)."""

    def __init__(
        self,
        link: WebSocketTransport,
        opening: EioOpen,
        nursery: trio.Nursery,
        handle: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self._link = link
        self._handle = handle
        """Given each packet by the reader itself (no hop through :meth:`receive`), if set."""
        self._ws = link._ws
        self.open = opening
        self._decoder = MessageDecoder(max_bytes=MAX_MESSAGE_BYTES)
        self._sending = trio.Lock()
        self._packets_send, self._packets = trio.open_memory_channel[Any](1024)
        self.ended: LinkClosed | None = None
        """Why the server's side ended (its close, a drop, silence, bad data)."""
        self.closed: LinkClosed | None = None
        """Set by this end's :meth:`aclose` / :meth:`abort`."""
        self._scope = trio.CancelScope()
        nursery.start_soon(self._read)

    async def _read(self) -> None:
        limit = (self.open.ping_interval_ms + self.open.ping_timeout_ms) / 1000
        limit += max(1.0, limit / 10)  # servers ping a little late (python-engineio rounds)
        with self._scope:
            try:
                while True:
                    with trio.move_on_after(limit) as silence:
                        message = await self._ws.get_message()
                    if silence.cancelled_caught:
                        raise LinkClosed(4008, "no Socket.IO heartbeat from the server")
                    packet = self._decoder.receive(message)
                    if isinstance(packet, EioPing):
                        await self.send([pong_message(packet.data)])
                    elif isinstance(packet, EioClose):
                        raise LinkClosed(1000, "the Socket.IO server closed the connection")
                    elif packet is not None and not isinstance(packet, EioOpen):
                        if self._handle is not None:
                            await self._handle(packet)
                        else:
                            await self._packets_send.send(packet)
            except trio_websocket.ConnectionClosed as exc:
                code = getattr(exc.reason, "code", None)
                self.ended = LinkClosed(code, "the Socket.IO link closed")
            except LinkClosed as exc:
                self.ended = exc
            except RemoteProtocolError as exc:
                self.ended = LinkClosed(4000, str(exc)[:120])
            finally:
                self._packets_send.close()

    def _gone(self) -> LinkClosed:
        return self.closed or self.ended or LinkClosed(1006, "the Socket.IO link dropped")

    async def send(self, messages: Sequence[str | bytes]) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            async with self._sending:
                for message in messages:
                    await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed:
            raise self._gone() from None

    async def receive(self) -> Any:
        """The next Socket.IO packet (raises :class:`LinkClosed` once the link ended)."""
        if self.closed is not None:
            raise self.closed
        try:
            packet = await self._packets.receive()
        except trio.EndOfChannel:
            raise self._gone() from None
        if self.closed is not None:  # closed while this receive waited
            raise self.closed
        return packet

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = LinkClosed(code, reason or "closed")
        self._scope.cancel()
        await self._link.aclose(code, reason)
        self._packets.close()

    async def abort(self) -> None:
        if self.closed is None:
            self.closed = LinkClosed(1006, "aborted")
        self._scope.cancel()
        await self._link.abort()
        self._packets.close()


class SocketIOTransport:
    """The :class:`~trio_realtime.transports.Transport` of a Socket.IO link to a stock server:
    our protocol through a :class:`SocketIOBridge` (see the module)."""

    def __init__(self, bridge: SocketIOBridge) -> None:
        self._bridge = bridge
        self._inbox_send, self._inbox = trio.open_memory_channel[bytes](1024)
        self._save_wanted = trio.Event()
        self._saver_scope = trio.CancelScope()
        self._sio: SioLink  # set by start()

    def start(self, sio: SioLink, nursery: trio.Nursery) -> None:
        self._sio = sio
        nursery.start_soon(self._watch_end)
        if self._bridge.state.directory is not None:
            nursery.start_soon(self._saver)

    async def handle(self, packet: Any) -> None:
        """A packet from the server (called by the link's reader), through the bridge, to the
        connection. Bad data from the server ends the link."""
        replies, frames = self._bridge.from_server(packet)
        if replies:
            await self._sio.send(replies)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for frame in frames:  # (not once this end closed: nobody reads any more)
                await self._inbox_send.send(encode_frame(frame))
        if self._bridge.take_save():
            self._save_wanted.set()

    async def _watch_end(self) -> None:
        """When the link ends, the connection's receive() raises LinkClosed."""
        try:
            await self._sio.receive()  # nothing arrives here: the reader hands packets over
        except LinkClosed:
            pass
        finally:
            self._inbox_send.close()
            self._saver_scope.cancel()

    async def _saver(self) -> None:
        """Write the recovery state at most every :data:`SAVE_INTERVAL` seconds, in a worker
        thread: writing it for every event (up to 10 ms each) held the link back."""
        state = self._bridge.state
        try:
            with self._saver_scope:
                while True:
                    await self._save_wanted.wait()
                    self._save_wanted = trio.Event()
                    await trio.to_thread.run_sync(state.write, state.snapshot())
                    await trio.sleep(SAVE_INTERVAL)
        finally:
            if self._save_wanted.is_set():  # the last changes, when the link ends
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(state.write, state.snapshot())

    async def send(self, data: bytes | str) -> None:
        if self._sio.closed is not None:
            raise self._sio.closed
        frames = decode_client_message(data)
        messages, answers = self._bridge.from_client(frames)
        await self._sio.send(messages)
        for frame in answers:  # (waits, like the pump, while the application reads nothing)
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                await self._inbox_send.send(encode_frame(frame))

    async def receive(self) -> bytes | str:
        if self._sio.closed is not None:
            raise self._sio.closed
        try:
            return await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._sio._gone() from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._sio.aclose(code, reason)
        self._inbox.close()

    async def abort(self) -> None:
        await self._sio.abort()
        self._inbox.close()


class SocketIOMessages:
    """A :class:`~trio_realtime.transports.Transport` of opaque messages over one Socket.IO
    namespace: each message is the event ``"message"`` (text as a string, bytes as a binary
    attachment), ``aclose(code, reason)`` first emits ``"close"`` with them, and a ``"gone"``
    event is the peer dropping. Between two clients of a server that relays those events (the
    ``/relay`` namespace of ``examples/socketio_server.js``) it keeps the transport contract:
    that is how the Socket.IO link layer is held to ``check_transport``."""

    def __init__(self, sio: SioLink, namespace: str) -> None:
        self._sio = sio
        self._namespace = namespace
        self._ended: LinkClosed | None = None

    async def send(self, data: bytes | str) -> None:
        if self._ended is not None:
            raise self._ended
        await self._sio.send(event_messages("message", data, namespace=self._namespace))

    async def receive(self) -> bytes | str:
        if self._ended is not None:
            raise self._ended
        try:
            while True:
                packet = await self._sio.receive()
                if isinstance(packet, SioEvent) and packet.event == "message" and packet.params:
                    data = packet.params[0]
                    if isinstance(data, str | bytes):
                        return data
                elif isinstance(packet, SioEvent) and packet.event == "close":
                    info = packet.params[0] if packet.params else {}
                    info = info if isinstance(info, dict) else {}
                    code = info.get("code") if isinstance(info.get("code"), int) else 1000
                    raise LinkClosed(code, str(info.get("reason", "")))
                elif isinstance(packet, SioEvent) and packet.event == "gone":
                    raise LinkClosed(1006, "the peer dropped")
                elif isinstance(packet, SioDisconnect):
                    raise LinkClosed(1000, "the Socket.IO server disconnected the namespace")
        except LinkClosed as exc:
            self._ended = self._sio.closed or exc
            raise self._ended from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self._sio.closed is None and self._ended is None:
            info = {"code": code, "reason": reason}
            with contextlib.suppress(LinkClosed):
                await self._sio.send(event_messages("close", info, namespace=self._namespace))
        self._ended = self._ended or LinkClosed(code, reason or "closed")
        await self._sio.aclose(code, reason)

    async def abort(self) -> None:
        self._ended = self._ended or LinkClosed(1006, "aborted")
        await self._sio.abort()


def parse_socketio_url(url: str) -> tuple[str, str, bool]:
    """``socketio://host:port/namespace?envelope=0`` -> (WebSocket URL, namespace, envelope)."""
    parts = urlsplit(url)
    if parts.scheme not in ("socketio", "socketios") or not parts.hostname:
        raise ValueError(f"a Socket.IO URL is socketio://host[:port]/namespace, got {url!r}")
    query = parse_qs(parts.query)
    envelope = query.get("envelope", ["1"])[-1].lower() not in ("0", "false", "no", "off")
    path = query.get("path", ["/socket.io"])[-1].rstrip("/") or "/socket.io"
    namespace = parts.path.rstrip("/") or "/"
    scheme = "wss" if parts.scheme == "socketios" else "ws"
    ws_url = f"{scheme}://{parts.netloc}{path}/?EIO=4&transport=websocket"
    return ws_url, namespace, envelope


async def _open_sio(
    nursery: trio.Nursery,
    url: str,
    connect_timeout: float,
    ssl_context: Any,
    handle: Callable[[Any], Awaitable[None]] | None = None,
) -> tuple[SioLink, str, bool]:
    """A WebSocket to ``url``'s Engine.IO endpoint, past the server's OPEN packet."""
    ws_url, namespace, envelope = parse_socketio_url(url)
    link = await connect_websocket(
        nursery, ws_url, connect_timeout, ssl_context=ssl_context, subprotocols=()
    )
    try:
        with trio.fail_after(connect_timeout):
            opening = decode_eio(await link._ws.get_message())
    except (trio.TooSlowError, trio_websocket.ConnectionClosed, RemoteProtocolError) as exc:
        await link.abort()
        raise LinkClosed(None, f"no Engine.IO handshake: {exc}") from None
    if not isinstance(opening, EioOpen):
        await link.abort()
        raise LinkClosed(None, "the server did not open an Engine.IO session")
    return SioLink(link, opening, nursery, handle), namespace, envelope


async def connect_socketio(
    nursery: trio.Nursery,
    url: str,
    connect_timeout: float,
    *,
    state: RecoveryState,
    ssl_context: Any = None,
) -> SocketIOTransport:
    """Open a Socket.IO link (Engine.IO v4 over WebSocket) to ``url`` (``socketio://``) for our
    protocol (the namespace CONNECT is sent when the connection sends its resume)."""
    _, namespace, envelope = parse_socketio_url(url)
    bridge = SocketIOBridge(namespace, envelope=envelope, state=state)
    transport = SocketIOTransport(bridge)
    sio, _, _ = await _open_sio(nursery, url, connect_timeout, ssl_context, transport.handle)
    bridge.open = sio.open
    transport.start(sio, nursery)
    return transport


async def connect_socketio_messages(
    nursery: trio.Nursery,
    url: str,
    connect_timeout: float,
    *,
    auth: dict[str, Any] | None = None,
    ssl_context: Any = None,
) -> SocketIOMessages:
    """Open a :class:`SocketIOMessages` transport: connected to ``url``'s namespace (with
    ``auth`` as its CONNECT payload) when this returns."""
    sio, namespace, _ = await _open_sio(nursery, url, connect_timeout, ssl_context)
    try:
        with trio.fail_after(connect_timeout):
            await sio.send([connect_message(namespace, auth)])
            while not isinstance(packet := await sio.receive(), SioConnect | SioConnectError):
                pass
    except trio.TooSlowError:
        await sio.abort()
        raise LinkClosed(None, "no CONNECT answer from the Socket.IO server") from None
    if isinstance(packet, SioConnectError):
        await sio.abort()
        raise LinkClosed(4001, f"the Socket.IO server refused: {packet.data}")
    return SocketIOMessages(sio, namespace)
