"""Fuzzing the decoders: random bytes, random JSON and mutated frames only ever raise ProtocolError."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_realtime import ProtocolError
from trio_realtime._protocol import (
    ClientProtocol,
    ServerProtocol,
    decode_client_message,
    decode_server_message,
    encode_frame,
)

from .strategies import client_frames, server_frames

DECODERS = (decode_client_message, decode_server_message)

# JSON that stresses the validators: huge and negative numbers, floats, deep nesting, odd strings.
wild_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["event", "meta", "resume", "ack", "presence", "typing", "receipts", ""])
)
wild_json: st.SearchStrategy[Any] = st.recursive(
    wild_scalar,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)
frame_keys = st.sampled_from(
    [
        "type",
        "kind",
        "seq",
        "channel",
        "event",
        "payload",
        "timestamp",
        "idempotency_key",
        "offset",
        "epoch",
        "rid",
        "ack_seq",
        "duplicates",
        "client_id",
        "protocol",
        "channels",
        "members",
        "t",
        "status",
        "metadata",
        "joins",
        "leaves",
        "readers",
        "user",
        "typing",
        "code",
        "message",
        "fatal",
    ]
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _decode_all(data: bytes | str) -> None:
    for decode in DECODERS:
        with contextlib.suppress(ProtocolError):
            decode(data)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _decode_all(data)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_random_text(data: str) -> None:
    _decode_all(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(wild_json)
def test_random_json(value: Any) -> None:
    _decode_all(_dumps(value))
    _decode_all(_dumps([value, value]))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(client_frames | server_frames, frame_keys, wild_json, st.booleans())
def test_mutated_frames(frame: Any, key: str, value: Any, delete: bool) -> None:
    obj = json.loads(encode_frame(frame))
    if delete:
        obj.pop(key, None)
    else:
        obj[key] = value
    _decode_all(_dumps(obj))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(client_frames | server_frames | wild_json.map(_dumps), max_size=8))
def test_state_machines_only_raise_protocol_errors(items: list[Any]) -> None:
    # Feed any sequence of (possibly illegal) messages to fresh protocol objects.
    for proto in (ClientProtocol(), ServerProtocol()):
        for item in items:
            data = item if isinstance(item, bytes) else encode_frame(item)
            try:
                proto.receive_data(data)
            except ProtocolError:
                break
            list(proto.events())


def test_deep_nesting_and_huge_messages() -> None:
    for data in (
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"1" * 1_000_000,
        b'"' + b"x" * 1_000_000 + b'"',
    ):
        _decode_all(data)
