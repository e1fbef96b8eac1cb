"""Per frame type: a valid frame with one field (or a nested one) set to any JSON value, or removed,
decodes or raises ProtocolError, and nothing else; a null in a required field is refused by name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_realtime import ProtocolError
from trio_realtime._protocol import decode_client_message, decode_server_message, encode_frame

from .strategies import CLIENT_STRATEGIES, SERVER_STRATEGIES

Decoder = Callable[[Any], list[Any]]

#: (frame class, its strategy, the decoder of its direction) for every frame type and meta kind.
CASES = [
    pytest.param(strategy, decode_client_message, id=f"client-{cls.__name__}")
    for cls, strategy in CLIENT_STRATEGIES.items()
] + [
    pytest.param(strategy, decode_server_message, id=f"server-{cls.__name__}")
    for cls, strategy in SERVER_STRATEGIES.items()
]

#: Objects whose keys are names (channels, users), each mapping to an object of fields.
MAPS = ("channels", "members", "joins", "leaves")
#: Fields that hold any JSON value: a null there is a value, not an absent field.
FREE = ("payload", "metadata")

_DEEP = "[" * 1100 + "]" * 1100  # past orjson's nesting limit (1,024)

# JSON text of any value, as it can be written on the wire: JSON values, integers of any size (so
# beyond 64 bits too), floats, and nesting on either side of the decoder's limit.
any_json_text = st.one_of(
    st.sampled_from(
        [
            "null",
            "true",
            "false",
            "0",
            "-1",
            "1.5",
            "-0.0",
            "1e400",
            '""',
            '"x"',
            "[]",
            "{}",
            '{"a":null}',
            "[null]",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "-123456789012345678901234567890",
            "1" * 400,
            '"12345678901234567890"',
            _DEEP,
        ]
    ),
    st.integers().map(str),
    st.floats().map(lambda x: json.dumps(x, allow_nan=True)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=8,
    ).map(lambda v: json.dumps(v, allow_nan=True)),
    st.integers(1, 1100).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 1100).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(1, 1100).map(lambda n: "[" * n + "12345678901234567890" + "]" * n),
)

_MARK = "\x00mutant\x00"
_MARK_JSON = json.dumps(_MARK)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key or index in ``obj``, nested up to 3 levels."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        yield (*prefix, key)
        if isinstance(value, dict | list) and len(prefix) < 2:
            yield from _paths(value, (*prefix, key))


def _mutate(wire: dict[str, Any], path: tuple[Any, ...], text: str | None) -> str:
    """The message ``wire`` with the value at ``path`` replaced by the JSON ``text`` (removed if
    ``None``)."""
    obj = json.loads(json.dumps(wire))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if text is None:
        del parent[path[-1]]
        return json.dumps(obj)
    parent[path[-1]] = _MARK
    return json.dumps(obj).replace(_MARK_JSON, text, 1)


def _outcome(decode: Decoder, data: Any) -> list[Any] | ProtocolError:
    """What ``decode`` returns, or the ProtocolError it raises (anything else fails the test)."""
    try:
        return decode(data)
    except ProtocolError as exc:
        return exc


def _only_protocol_errors(decode: Decoder, message: str) -> None:
    for data in (message, message.encode(), bytearray(message.encode())):
        outcome = _outcome(decode, data)
        if isinstance(outcome, ProtocolError):
            assert outcome.close_code == 4000
        else:
            assert len(outcome) == 1


@pytest.mark.parametrize(("frames", "decode"), CASES)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_field_decodes_or_raises_protocol_error(
    frames: st.SearchStrategy[Any], decode: Decoder, data: st.DataObject
) -> None:
    wire = json.loads(encode_frame(data.draw(frames)))
    valid = encode_frame(data.draw(frames)).decode()
    text = data.draw(st.one_of(st.none(), st.just("null"), any_json_text))  # None: remove it
    other = decode_server_message if decode is decode_client_message else decode_client_message
    for path in _paths(wire):  # each field in turn (drawing one finds a rare one too rarely)
        message = _mutate(wire, path, text)
        _only_protocol_errors(decode, message)
        _only_protocol_errors(other, message)
        # within a batch too (upstream events take a fast path)
        outcome = _outcome(decode, f"[{valid},{message}]")
        if isinstance(outcome, ProtocolError) and outcome.field is not None:
            assert outcome.field.startswith("[1]")


def _field_paths(wire: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    """The paths of the fields of a frame: its own, and those of the objects in its maps."""
    for key, value in wire.items():
        yield (key,)
        if key in MAPS:
            for name, entry in value.items():
                for field in entry:
                    yield (key, name, field)


@pytest.mark.parametrize(("frames", "decode"), CASES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_null_is_absent_in_an_optional_field_and_refused_in_a_required_one(
    frames: st.SearchStrategy[Any], decode: Decoder, data: st.DataObject
) -> None:
    wire = json.loads(encode_frame(data.draw(frames)))
    for path in _field_paths(wire):
        if path[-1] in FREE:
            continue
        field = ".".join(path)
        absent = _outcome(decode, _mutate(wire, path, None))
        null = _outcome(decode, _mutate(wire, path, "null"))
        if isinstance(absent, ProtocolError):
            # required: a null is refused, naming the field, as its absence is
            assert absent.field == field
            assert isinstance(null, ProtocolError)
            assert null.field == field
            assert "null" in str(null) or "missing" in str(null)
        else:
            # optional: a null is the field left out
            assert null == absent


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"type":"meta","kind":"typing","channel":"c","typing":null}', "typing"),
        (b'{"type":"meta","kind":"typing","channel":null,"typing":true}', "channel"),
        (b'{"type":"event","seq":null,"idempotency_key":"k","channel":"c","event":"e",'
         b'"payload":1,"timestamp":1}', "seq"),
        (b'[{"type":"ping","t":1},{"type":"meta","kind":"typing","channel":"c","typing":null}]',
         "[1].typing"),
    ],
)  # fmt: skip
def test_null_in_a_required_client_field(data: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_message(data)
    assert info.value.field == field
    assert "got null" in str(info.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"type":"meta","kind":"typing","channel":"c","typing":null,"user":"u"}', "typing"),
        (b'{"type":"subscribed","rid":1,"channel":"c","epoch":"e","offset":0,"recovered":null}',
         "recovered"),
        (b'{"type":"resume_response","protocol":1,"client_id":"c","session_id":"s","ack_seq":0,'
         b'"heartbeat_interval_ms":1,"max_frame_bytes":1,"server_time":0,'
         b'"channels":{"r":{"epoch":"e","offset":0,"recovered":null}}}', "channels.r.recovered"),
        (b'{"type":"meta","kind":"presence_state","channel":"c","members":null}', "members"),
        (b'{"type":"meta","kind":"receipts","rid":1,"channel":"c","readers":null}', "readers"),
    ],
)  # fmt: skip
def test_null_in_a_required_server_field(data: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_server_message(data)
    assert info.value.field == field
    assert "got null" in str(info.value)


def test_null_in_an_optional_field_is_the_field_left_out() -> None:
    assert decode_server_message(
        b'{"type":"error","code":"x","message":"m","fatal":null,"seq":null,"rid":null}'
    ) == decode_server_message(b'{"type":"error","code":"x","message":"m"}')


# Text made of what JSON numbers and nesting are made of: runs of digits long enough to take the
# exact reading of big integers, in and out of strings.
jsonish = st.lists(
    st.one_of(
        st.text("0123456789", min_size=15, max_size=25),
        st.sampled_from(['"', "-", "[", "]", "{", "}", ",", ":", ".", "e", "null", " ", "\\", "é"]),
        st.sampled_from(['{"type":"event","payload":', '{"type":"meta","kind":"typing",']),
    ),
    max_size=20,
).map("".join)


@settings(max_examples=150)
@given(jsonish)
def test_jsonish_text_raises_only_protocol_errors(text: str) -> None:
    for data in (text, text.encode(), bytearray(text.encode()), memoryview(text.encode())):
        for decode in (decode_client_message, decode_server_message):
            _outcome(decode, data)
