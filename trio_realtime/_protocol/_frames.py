"""Frame classes: one immutable attrs class per frame of PROTOCOL.md.

Frames are plain values. They know how to turn themselves into the JSON object that goes on the wire
(:meth:`to_wire`); turning JSON back into frames, with validation, is the codec's job (``_codec.py``).

Optional fields that are ``None`` are left out of the JSON object, so ``decode(encode(frame)) == frame``
holds for every frame.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import attrs

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "ChannelPosition",
    "ChannelResume",
    "ClientFrame",
    "Error",
    "Frame",
    "Message",
    "Ping",
    "Pong",
    "PresenceDiff",
    "PresenceMember",
    "PresenceState",
    "PresenceStatus",
    "PresenceUpdate",
    "ReadReceipt",
    "Receipts",
    "ReceiptsQuery",
    "Resume",
    "ResumeResponse",
    "ServerFrame",
    "Skip",
    "Subscribe",
    "Subscribed",
    "Typing",
    "Unsubscribe",
    "Unsubscribed",
    "UpstreamEvent",
]

PROTOCOL_VERSION = 1

#: A JSON value as produced by ``orjson.loads``: dict, list, str, int, float, bool or None.
JSON = Any


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class PresenceStatus(enum.StrEnum):
    """A member's presence status (PROTOCOL.md section 5)."""

    ONLINE = "online"
    AWAY = "away"
    BUSY = "busy"
    OFFLINE = "offline"


# --- handshake -----------------------------------------------------------------------------------


@attrs.frozen
class ChannelPosition:
    """Where a client stands in one channel's log: the last ``offset`` processed, read under ``epoch``."""

    offset: int
    epoch: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _drop_none({"offset": self.offset, "epoch": self.epoch})


@attrs.frozen
class Resume:
    """First frame of every connection, client to server (section 2). The token is never shown in
    ``repr`` so that frames can be logged safely."""

    TYPE: ClassVar[str] = "resume"
    client_id: str
    last_ack_seq: int = 0
    token: str | None = attrs.field(default=None, repr=False)
    channels: dict[str, ChannelPosition] = attrs.field(factory=dict)
    protocol: int = PROTOCOL_VERSION

    def to_wire(self) -> dict[str, Any]:
        return _drop_none(
            {
                "type": self.TYPE,
                "protocol": self.protocol,
                "client_id": self.client_id,
                "token": self.token,
                "last_ack_seq": self.last_ack_seq,
                "channels": {name: pos.to_wire() for name, pos in self.channels.items()},
            }
        )


@attrs.frozen
class ChannelResume:
    """The server's answer for one channel in :class:`ResumeResponse`."""

    epoch: str
    offset: int
    recovered: bool

    def to_wire(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset, "recovered": self.recovered}


@attrs.frozen
class ResumeResponse:
    """The server's answer to :class:`Resume`, before anything else (section 2)."""

    TYPE: ClassVar[str] = "resume_response"
    client_id: str
    session_id: str
    ack_seq: int
    heartbeat_interval_ms: int
    max_frame_bytes: int
    server_time: int
    channels: dict[str, ChannelResume] = attrs.field(factory=dict)
    protocol: int = PROTOCOL_VERSION

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "protocol": self.protocol,
            "client_id": self.client_id,
            "session_id": self.session_id,
            "ack_seq": self.ack_seq,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_frame_bytes": self.max_frame_bytes,
            "server_time": self.server_time,
            "channels": {name: ch.to_wire() for name, ch in self.channels.items()},
        }


# --- upstream ------------------------------------------------------------------------------------


@attrs.frozen
class Skip:
    """A withdrawn upstream event (an addition to PROTOCOL.md section 3): the client consumed
    ``seq`` without an event, because the event expired, was dropped or was discarded before the
    server had it. It follows the seq rules of an event (contiguous, ``seq <= ack_seq`` is a
    duplicate, ahead is ``out_of_order``); the server stores nothing and moves its watermark past
    it, so seqs stay contiguous and nothing is lost silently: the sender resolved that send as
    withdrawn."""

    TYPE: ClassVar[str] = "skip"
    seq: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "seq": self.seq}


@attrs.frozen
class UpstreamEvent:
    """An event published by a client (section 3). ``seq`` is per ``client_id``, from 1, without gaps."""

    TYPE: ClassVar[str] = "event"
    seq: int
    channel: str
    event: str
    payload: JSON
    timestamp: int
    idempotency_key: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "seq": self.seq,
            "idempotency_key": self.idempotency_key,
            "channel": self.channel,
            "event": self.event,
            "payload": self.payload,
            "timestamp": self.timestamp,
        }


@attrs.frozen
class Ack:
    """Cumulative ack: every upstream ``seq <= ack_seq`` is durably stored by the server. ``duplicates``
    lists the seqs of this batch that the server already had (not published again)."""

    TYPE: ClassVar[str] = "ack"
    ack_seq: int
    duplicates: tuple[int, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "ack_seq": self.ack_seq, "duplicates": list(self.duplicates)}


@attrs.frozen
class Error:
    """An error report. With ``seq``, the upstream event of that seq was definitively rejected (and counts
    as consumed). With ``rid``, the request of that id failed. ``fatal`` errors precede a close."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    seq: int | None = None
    fatal: bool = False
    rid: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return _drop_none(
            {
                "type": self.TYPE,
                "code": self.code,
                "message": self.message,
                "seq": self.seq,
                "fatal": self.fatal,
                "rid": self.rid,
            }
        )


# --- downstream ----------------------------------------------------------------------------------


@attrs.frozen
class Subscribe:
    """Subscribe to a channel, optionally from a known position (section 4)."""

    TYPE: ClassVar[str] = "subscribe"
    rid: int
    channel: str
    offset: int | None = None
    epoch: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _drop_none(
            {
                "type": self.TYPE,
                "rid": self.rid,
                "channel": self.channel,
                "offset": self.offset,
                "epoch": self.epoch,
            }
        )


@attrs.frozen
class Subscribed:
    """Answer to :class:`Subscribe`; replayed events (if ``recovered``) follow it."""

    TYPE: ClassVar[str] = "subscribed"
    rid: int
    channel: str
    epoch: str
    offset: int
    recovered: bool

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "rid": self.rid,
            "channel": self.channel,
            "epoch": self.epoch,
            "offset": self.offset,
            "recovered": self.recovered,
        }


@attrs.frozen
class Unsubscribe:
    TYPE: ClassVar[str] = "unsubscribe"
    rid: int
    channel: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "rid": self.rid, "channel": self.channel}


@attrs.frozen
class Unsubscribed:
    TYPE: ClassVar[str] = "unsubscribed"
    rid: int
    channel: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "rid": self.rid, "channel": self.channel}


@attrs.frozen
class Message:
    """An event of a channel's log: as the server's store keeps it, as the wire carries it to a
    subscriber (``type: "event"``, section 4), and as ``conn.messages()`` delivers it, once per
    connection and in offset order. One type for all three, so no layer copies it into another.

    ``timestamp`` is the sender's clock (milliseconds); ``sender`` the user who sent it (set by
    the server); ``idempotency_key`` the key it was sent with; ``server_time`` when the server
    stored it (milliseconds since the epoch, the server's clock: for audit, and to order what
    senders' clocks cannot)."""

    TYPE: ClassVar[str] = "event"
    channel: str
    offset: int
    epoch: str
    event: str
    payload: JSON
    timestamp: int
    sender: str | None = None
    idempotency_key: str | None = None
    server_time: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "type": self.TYPE,
            "channel": self.channel,
            "offset": self.offset,
            "epoch": self.epoch,
            "event": self.event,
            "payload": self.payload,
            "timestamp": self.timestamp,
        }
        if self.sender is not None:
            wire["sender"] = self.sender
        if self.idempotency_key is not None:
            wire["idempotency_key"] = self.idempotency_key
        if self.server_time is not None:
            wire["server_time"] = self.server_time
        return wire


# --- heartbeat -----------------------------------------------------------------------------------


@attrs.frozen
class Ping:
    TYPE: ClassVar[str] = "ping"
    t: int

    def response(self) -> Pong:
        """The :class:`Pong` that answers this ping."""
        return Pong(self.t)

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "t": self.t}


@attrs.frozen
class Pong:
    TYPE: ClassVar[str] = "pong"
    t: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "t": self.t}


# --- meta (section 5) ----------------------------------------------------------------------------


@attrs.frozen
class PresenceUpdate:
    """Client sets its presence in a channel."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "presence"
    channel: str
    status: PresenceStatus
    metadata: dict[str, JSON] = attrs.field(factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "kind": self.KIND,
            "channel": self.channel,
            "status": self.status.value,
            "metadata": self.metadata,
        }


@attrs.frozen
class PresenceMember:
    status: PresenceStatus
    metadata: dict[str, JSON] = attrs.field(factory=dict)
    since: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"status": self.status.value, "metadata": self.metadata, "since": self.since}


@attrs.frozen
class PresenceState:
    """Full presence of a channel, sent once on subscribe."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "presence_state"
    channel: str
    members: dict[str, PresenceMember] = attrs.field(factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "kind": self.KIND,
            "channel": self.channel,
            "members": {user: m.to_wire() for user, m in self.members.items()},
        }


@attrs.frozen
class PresenceDiff:
    """Changes to a channel's presence since the last state or diff."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "presence_diff"
    channel: str
    joins: dict[str, PresenceMember] = attrs.field(factory=dict)
    leaves: dict[str, PresenceMember] = attrs.field(factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "kind": self.KIND,
            "channel": self.channel,
            "joins": {user: m.to_wire() for user, m in self.joins.items()},
            "leaves": {user: m.to_wire() for user, m in self.leaves.items()},
        }


@attrs.frozen
class Typing:
    """Typing indicator. From a client, ``user`` is absent; relayed by the server, it names the typist."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "typing"
    channel: str
    typing: bool
    user: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _drop_none(
            {
                "type": self.TYPE,
                "kind": self.KIND,
                "channel": self.channel,
                "typing": self.typing,
                "user": self.user,
            }
        )


@attrs.frozen
class ReadReceipt:
    """ "Read up to ``offset``" watermark. From a client, ``user`` is absent; relayed, it names the reader."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "receipt"
    channel: str
    offset: int
    user: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _drop_none(
            {
                "type": self.TYPE,
                "kind": self.KIND,
                "channel": self.channel,
                "offset": self.offset,
                "user": self.user,
            }
        )


@attrs.frozen
class ReceiptsQuery:
    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "receipts_query"
    rid: int
    channel: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "kind": self.KIND, "rid": self.rid, "channel": self.channel}


@attrs.frozen
class Receipts:
    """Answer to :class:`ReceiptsQuery`: each reader's watermark."""

    TYPE: ClassVar[str] = "meta"
    KIND: ClassVar[str] = "receipts"
    rid: int
    channel: str
    readers: dict[str, int] = attrs.field(factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "kind": self.KIND,
            "rid": self.rid,
            "channel": self.channel,
            "readers": self.readers,
        }


#: Frames a client sends (and a server receives).
ClientFrame = (
    Resume
    | UpstreamEvent
    | Skip
    | Subscribe
    | Unsubscribe
    | Ping
    | Pong
    | PresenceUpdate
    | Typing
    | ReadReceipt
    | ReceiptsQuery
)

#: Frames a server sends (and a client receives).
ServerFrame = (
    ResumeResponse
    | Ack
    | Error
    | Message
    | Subscribed
    | Unsubscribed
    | Ping
    | Pong
    | PresenceState
    | PresenceDiff
    | Typing
    | ReadReceipt
    | Receipts
)

Frame = ClientFrame | ServerFrame
