"""Codec: every frame type round-trips; bad input raises ProtocolError naming the field."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_realtime import LocalProtocolError, ProtocolError
from trio_realtime._protocol import (
    ClientFrame,
    ServerFrame,
    UpstreamEvent,
    _frames,
    decode_client_message,
    decode_server_message,
    encode_batch,
    encode_frame,
    encode_upstream,
    encode_upstreams,
    join_encoded,
)

from .strategies import (
    CLIENT_CLASSES,
    SERVER_CLASSES,
    client_frames,
    json_value,
    name,
    pos,
    server_frames,
    uint,
    upstream_events,
)


@given(client_frames)
def test_client_frame_round_trip(frame: ClientFrame) -> None:
    data = encode_frame(frame)
    assert decode_client_message(data) == [frame]
    # and bytes -> frames -> bytes is the identity on what we produce
    assert encode_frame(decode_client_message(data)[0]) == data


@given(server_frames)
def test_server_frame_round_trip(frame: ServerFrame) -> None:
    data = encode_frame(frame)
    assert decode_server_message(data) == [frame]
    assert encode_frame(decode_server_message(data)[0]) == data


@given(st.lists(client_frames, min_size=1, max_size=6))
def test_client_batch_round_trip(frames: list[ClientFrame]) -> None:
    data = encode_batch(frames)
    assert decode_client_message(data) == frames
    assert decode_client_message(data.decode()) == frames  # str input too


@given(st.lists(server_frames, min_size=1, max_size=6))
def test_server_batch_round_trip(frames: list[ServerFrame]) -> None:
    assert decode_server_message(encode_batch(frames)) == frames


def _frame_classes() -> set[type]:
    return {
        obj
        for obj in vars(_frames).values()
        if isinstance(obj, type) and hasattr(obj, "TYPE") and obj.__module__ == _frames.__name__
    }


def test_every_frame_type_is_generated() -> None:
    # The strategies cover every frame class of PROTOCOL.md: a new frame class without a strategy
    # fails here instead of going untested.
    assert _frame_classes() == CLIENT_CLASSES | SERVER_CLASSES


def test_single_frame_is_sent_without_array() -> None:
    one = encode_frame(UpstreamEvent(1, "c", "e", None, 0, "k"))
    assert join_encoded([one]) == one
    assert join_encoded([one, one]) == b"[" + one + b"," + one + b"]"
    with pytest.raises(LocalProtocolError):
        join_encoded([])


def test_unknown_fields_are_ignored() -> None:
    msg = {"type": "ping", "t": 5, "future_field": {"x": 1}}
    assert decode_client_message(orjson.dumps(msg)) == [_frames.Ping(5)]


def test_payload_that_json_cannot_carry_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(UpstreamEvent(1, "c", "e", {1, 2}, 0, "k"))
    assert info.value.field == "payload"


EVENT: dict[str, Any] = {
    "type": "event",
    "seq": 3,
    "idempotency_key": "c-1:3",
    "channel": "room:1",
    "event": "chat",
    "payload": {"text": "hi"},
    "timestamp": 17,
}


def _with(**changes: Any) -> bytes:
    msg = dict(EVENT)
    for key, value in changes.items():
        if value is _DROP:
            del msg[key]
        else:
            msg[key] = value
    return json.dumps(msg).encode()  # stdlib json: it can write integers beyond 64 bits


_DROP = object()


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (_with(seq=_DROP), "seq", "missing"),
        (_with(seq="3"), "seq", "integer"),
        (_with(seq=True), "seq", "integer"),
        (_with(seq=3.0), "seq", "integer"),
        (_with(seq=0), "seq", "range"),
        (_with(seq=-1), "seq", "range"),
        (_with(seq=2**63), "seq", "range"),
        (_with(seq=2**64), "seq", "integer"),
        (_with(seq=10**30), "seq", "integer"),
        (_with(channel=""), "channel", "empty"),
        (_with(channel=5), "channel", "string"),
        (_with(payload=_DROP), "payload", "missing"),
        (_with(timestamp=None), "timestamp", "integer"),
        (_with(type="nope"), "type", "unknown"),
        (_with(type=_DROP), "type", "missing"),
        (b'{"type":"meta","kind":"zzz"}', "kind", "unknown"),
        (b'{"type":"meta","kind":"presence","channel":"c","status":"asleep"}', "status", "status"),
        (
            b'{"type":"resume","protocol":1,"client_id":"c","last_ack_seq":0,"channels":[]}',
            "channels",
            "object",
        ),
        (
            b'{"type":"resume","protocol":1,"client_id":"c","last_ack_seq":0,'
            b'"channels":{"room":{"offset":"x"}}}',
            "channels.room.offset",
            "integer",
        ),
        (b'[{"type":"ping","t":1},{"type":"ping"}]', "[1].t", "missing"),
        (b'[{"type":"ping","t":1},7]', "[1]", "object"),
    ],
)
def test_bad_client_input_names_the_field(data: bytes, field: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_message(data)
    assert info.value.field == field
    assert words in str(info.value)
    assert info.value.close_code == 4000


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"type":"ack"}', "ack_seq"),
        (b'{"type":"ack","ack_seq":3,"duplicates":[1,"2"]}', "duplicates[1]"),
        (b'{"type":"typing","channel":"c","typing":true}', "type"),
        (b'{"type":"meta","kind":"typing","channel":"c","typing":true}', "user"),
        (
            b'{"type":"meta","kind":"receipts","rid":1,"channel":"c","readers":{"a":-1}}',
            "readers.a",
        ),
        (
            b'{"type":"event","channel":"c","offset":1,"epoch":"e","event":"x","timestamp":1}',
            "payload",
        ),
        (b'{"type":"error","code":"x","message":"m","fatal":"yes"}', "fatal"),
    ],
)
def test_bad_server_input_names_the_field(data: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_server_message(data)
    assert info.value.field == field


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b"5", b'"str"', b"null", b"\xff\xfe", b"[" * 5000 + b"]" * 5000],
)
def test_messages_that_are_not_frames(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_client_message(data)
    with pytest.raises(ProtocolError):
        decode_server_message(data)


def test_direction_matters() -> None:
    # An upstream event is not a valid downstream event and vice versa.
    with pytest.raises(ProtocolError):
        decode_server_message(orjson.dumps(EVENT))
    with pytest.raises(ProtocolError):
        decode_client_message(b'{"type":"ack","ack_seq":1}')


def test_resume_repr_hides_the_token() -> None:
    frame = decode_client_message(
        b'{"type":"resume","protocol":1,"client_id":"c","token":"s3cret","last_ack_seq":0}'
    )[0]
    assert "s3cret" not in repr(frame)
    assert "s3cret" not in str(frame)


@given(upstream_events)
def test_encode_upstream_is_encode_frame_without_the_frame_object(frame: UpstreamEvent) -> None:
    """The send path's encoder gives exactly the bytes of the general one, trimmed to size."""
    data = encode_upstream(
        frame.seq, frame.channel, frame.event, frame.payload, frame.timestamp, frame.idempotency_key
    )
    assert data == encode_frame(frame)
    assert type(data) is bytes


def test_encode_upstream_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError):
        encode_upstream(1, "c", "e", {1, 2}, 0, "k")
    with pytest.raises(LocalProtocolError):
        encode_upstreams(1, "c", "e", [1, {1, 2}], 0, "k:")


@given(
    first=pos,
    channel=name,
    event=name,
    payloads=st.lists(json_value, max_size=5),
    timestamp=uint,
    prefix=st.text(max_size=12),
)
def test_encode_upstreams_gives_what_encode_upstream_gives_each(
    first: int, channel: str, event: str, payloads: list[Any], timestamp: int, prefix: str
) -> None:
    """send_many's encoder: the bytes of encode_upstream for each payload, with consecutive
    seqs and the keys prefix + seq (a prefix that JSON must escape included)."""
    expected = [
        encode_upstream(seq, channel, event, payload, timestamp, f"{prefix}{seq}")
        for seq, payload in enumerate(payloads, first)
    ]
    assert encode_upstreams(first, channel, event, payloads, timestamp, prefix) == expected


_ODD_VALUES = st.sampled_from(
    [_DROP, 0, 1, -1, 2**63 - 1, 2**63, "", "x", True, False, None, 3.0, [], {}, {"a": 1}]
)


@given(
    st.dictionaries(
        st.sampled_from(["seq", "idempotency_key", "channel", "event", "payload", "timestamp"]),
        _ODD_VALUES,
    )
)
def test_events_in_a_batch_are_decoded_as_a_lone_event_is(changes: dict[str, Any]) -> None:
    """Upstream events in a batch take a fast path on the server; it must accept and refuse
    exactly what the full decoder does, which names the field."""
    lone = _with(**changes)
    batch = b'[{"type":"ping","t":1},' + lone + b"]"
    alone: list[ClientFrame] | ProtocolError
    in_batch: list[ClientFrame] | ProtocolError
    try:
        alone = decode_client_message(lone)
    except ProtocolError as exc:
        alone = exc
    try:
        in_batch = decode_client_message(batch)[1:]
    except ProtocolError as exc:
        in_batch = exc
    if isinstance(alone, ProtocolError):
        assert isinstance(in_batch, ProtocolError)
        assert in_batch.field == f"[1].{alone.field}"
        assert str(in_batch) == str(alone).replace(f"{alone.field}:", f"[1].{alone.field}:", 1)
    else:
        assert in_batch == alone
