"""Hypothesis strategies for valid frames of each direction."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from trio_realtime._protocol import (
    Ack,
    ChannelPosition,
    ChannelResume,
    Error,
    Message,
    Ping,
    Pong,
    PresenceDiff,
    PresenceMember,
    PresenceState,
    PresenceStatus,
    PresenceUpdate,
    ReadReceipt,
    Receipts,
    ReceiptsQuery,
    Resume,
    ResumeResponse,
    Skip,
    Subscribe,
    Subscribed,
    Typing,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
)

MAX = 2**63 - 1
uint = st.integers(min_value=0, max_value=MAX)
pos = st.integers(min_value=1, max_value=MAX)
text = st.text(max_size=20)
name = st.text(min_size=1, max_size=20)

json_scalar = st.none() | st.booleans() | st.integers(-(2**63), MAX) | text
json_scalar |= st.floats(allow_nan=False, allow_infinity=False)
json_value: st.SearchStrategy[Any] = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_object = st.dictionaries(text, json_value, max_size=4)

CLIENT_CLASSES: set[type] = set()
SERVER_CLASSES: set[type] = set()
#: The strategy of each frame class, per direction (ping and pong are in both).
CLIENT_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {}
SERVER_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {}


def _client(cls: type, **fields: Any) -> st.SearchStrategy[Any]:
    CLIENT_CLASSES.add(cls)
    CLIENT_STRATEGIES[cls] = st.builds(cls, **fields)
    return CLIENT_STRATEGIES[cls]


def _server(cls: type, **fields: Any) -> st.SearchStrategy[Any]:
    SERVER_CLASSES.add(cls)
    SERVER_STRATEGIES[cls] = st.builds(cls, **fields)
    return SERVER_STRATEGIES[cls]


positions = st.builds(ChannelPosition, offset=uint, epoch=st.none() | name)
members = st.builds(
    PresenceMember, status=st.sampled_from(PresenceStatus), metadata=json_object, since=uint
)

upstream_events = _client(
    UpstreamEvent,
    seq=pos,
    channel=name,
    event=name,
    payload=json_value,
    timestamp=uint,
    idempotency_key=name,
)

client_frames = st.one_of(
    _client(
        Resume,
        client_id=name,
        last_ack_seq=uint,
        token=st.none() | text,
        channels=st.dictionaries(name, positions, max_size=3),
        protocol=uint,
    ),
    upstream_events,
    _client(Skip, seq=pos),
    _client(Subscribe, rid=uint, channel=name, offset=st.none() | uint, epoch=st.none() | name),
    _client(Unsubscribe, rid=uint, channel=name),
    _client(Ping, t=uint),
    _client(Pong, t=uint),
    _client(
        PresenceUpdate, channel=name, status=st.sampled_from(PresenceStatus), metadata=json_object
    ),
    _client(Typing, channel=name, typing=st.booleans()),
    _client(ReadReceipt, channel=name, offset=uint),
    _client(ReceiptsQuery, rid=uint, channel=name),
)

server_frames = st.one_of(
    _server(
        ResumeResponse,
        client_id=name,
        session_id=name,
        ack_seq=uint,
        heartbeat_interval_ms=pos,
        max_frame_bytes=pos,
        server_time=uint,
        channels=st.dictionaries(
            name,
            st.builds(ChannelResume, epoch=name, offset=uint, recovered=st.booleans()),
            max_size=3,
        ),
        protocol=uint,
    ),
    _server(Ack, ack_seq=uint, duplicates=st.lists(uint, max_size=5).map(tuple)),
    _server(
        Error,
        code=name,
        message=text,
        seq=st.none() | pos,
        fatal=st.booleans(),
        rid=st.none() | uint,
    ),
    _server(
        Message,
        channel=name,
        offset=pos,
        epoch=name,
        event=name,
        payload=json_value,
        timestamp=uint,
        sender=st.none() | name,
        idempotency_key=st.none() | name,
        server_time=st.none() | uint,
    ),
    _server(Subscribed, rid=uint, channel=name, epoch=name, offset=uint, recovered=st.booleans()),
    _server(Unsubscribed, rid=uint, channel=name),
    _server(Ping, t=uint),
    _server(Pong, t=uint),
    _server(PresenceState, channel=name, members=st.dictionaries(name, members, max_size=3)),
    _server(
        PresenceDiff,
        channel=name,
        joins=st.dictionaries(name, members, max_size=3),
        leaves=st.dictionaries(name, members, max_size=3),
    ),
    _server(Typing, channel=name, typing=st.booleans(), user=name),
    _server(ReadReceipt, channel=name, offset=uint, user=name),
    _server(Receipts, rid=uint, channel=name, readers=st.dictionaries(name, uint, max_size=3)),
)
