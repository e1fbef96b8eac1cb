"""Payload validation (check_payload) and integer literals beyond 64 bits in what clients send."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_realtime import LocalProtocolError, ProtocolError
from trio_realtime._protocol import (
    PresenceUpdate,
    TooBigInteger,
    UpstreamEvent,
    check_payload,
    decode_client_message,
    decode_server_message,
    encode_frame,
)
from trio_realtime._protocol._codec import _may_hold_big_integer

MIN = -(2**63)
MAX = 2**63 - 1


def _nest(depth: int, kind: str = "list") -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


# --- check_payload -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (None, 0),
        ("s", 0),
        (5, 0),
        ([], 1),
        ({}, 1),
        ({"a": [1]}, 2),
        ([{"a": {}}], 3),
        ({"a": 1, "b": [], "c": {"d": [[]]}}, 4),
    ],
)
def test_depth(value: Any, depth: int) -> None:
    assert check_payload(value, max_depth=depth) is None
    if depth:
        assert check_payload(value, max_depth=depth - 1) == f"nested deeper than {depth - 1}"


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("max_depth", [1, 2, 32])
def test_depth_boundary(kind: str, max_depth: int) -> None:
    assert check_payload(_nest(max_depth, kind), max_depth=max_depth) is None
    assert check_payload(_nest(max_depth + 1, kind), max_depth=max_depth) is not None
    # a deep branch beside shallow ones
    wide = [1, "x", [], {"a": None}, _nest(max_depth, kind)]
    assert check_payload(wide, max_depth=max_depth + 1) is None
    assert check_payload(wide, max_depth=max_depth) is not None


def test_far_too_deep_does_not_recurse() -> None:
    assert check_payload(_nest(100_000), max_depth=32) == "nested deeper than 32"
    assert check_payload(_nest(100_000), max_depth=200_000) is None


@pytest.mark.parametrize("value", [MIN, MAX, 0, -1, True, False, 1.5, -0.0, 1e300])
def test_numbers_accepted(value: Any) -> None:
    assert check_payload(value, max_depth=2) is None
    assert check_payload([value], max_depth=2) is None
    assert check_payload({"n": [value]}, max_depth=2) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (MAX + 1, "integer out of the 64-bit range"),
        (MIN - 1, "integer out of the 64-bit range"),
        (2**64 - 1, "integer out of the 64-bit range"),
        pytest.param(10**5000, "integer out of the 64-bit range", id="10**5000"),  # unprintable
        (TooBigInteger("123456789012345678901"), "integer too large for 64 bits"),
        (float("inf"), "number is not finite"),
        (float("-inf"), "number is not finite"),
        (float("nan"), "number is not finite"),
        ((1, 2), "not a JSON value: tuple"),
        ({1, 2}, "not a JSON value: set"),
        (b"x", "not a JSON value: bytes"),
        (object(), "not a JSON value: object"),
    ],
)
def test_refused(value: Any, reason: str) -> None:
    assert check_payload(value, max_depth=4) == reason
    assert check_payload([1, value], max_depth=4) == reason
    assert check_payload({"a": {"b": value}}, max_depth=4) == reason


def test_object_keys_must_be_strings() -> None:
    assert check_payload({1: "x"}, max_depth=2) == "object key is not a string"
    assert check_payload([{"a": 1, None: 2}], max_depth=2) == "object key is not a string"


def test_exactly_json_types() -> None:
    class Text(str):
        pass

    assert check_payload(Text("x"), max_depth=1) == "not a JSON value: Text"
    assert check_payload({"a": Text("x")}, max_depth=1) == "not a JSON value: Text"


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(MIN, MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@given(json_values, st.integers(0, 6))
def test_accepts_json_within_the_depth(value: Any, max_depth: int) -> None:
    expected = None if _depth(value) <= max_depth else f"nested deeper than {max_depth}"
    assert check_payload(value, max_depth=max_depth) == expected


# --- integer literals beyond 64 bits -------------------------------------------------------------


def _event(payload: str, seq: str = "3") -> str:
    return (
        f'{{"type":"event","seq":{seq},"idempotency_key":"k","channel":"c","event":"e",'
        f'"payload":{payload},"timestamp":17}}'
    )


@pytest.mark.parametrize(
    "literal",
    [
        "9223372036854775808",  # 2**63: orjson reads it as an int, out of range
        "18446744073709551615",  # 2**64 - 1: the same
        "18446744073709551616",  # 2**64: orjson reads a float
        "-9223372036854775809",  # -2**63 - 1: a float, with 19 digits
        "123456789012345678901234567890",
        "-123456789012345678901234567890",
        "1" * 300,
    ],
)
@pytest.mark.parametrize("form", [str, str.encode])
def test_an_integer_beyond_64_bits_in_a_payload_is_refused(literal: str, form: Any) -> None:
    (frame,) = decode_client_message(form(_event(f'{{"n":[1,{literal}],"m":2}}')))
    assert isinstance(frame, UpstreamEvent)
    n = frame.payload["n"][1]
    assert n == TooBigInteger(literal) or n == int(literal)  # out of range, refused all the same
    assert frame.payload["m"] == 2
    assert check_payload(frame.payload, max_depth=32) in (
        "integer too large for 64 bits",
        "integer out of the 64-bit range",
    )


def test_a_big_integer_literal_is_kept_as_written() -> None:
    (frame,) = decode_client_message(_event("[18446744073709551616, -9223372036854775809]"))
    assert isinstance(frame, UpstreamEvent)
    assert frame.payload == [
        TooBigInteger("18446744073709551616"),
        TooBigInteger("-9223372036854775809"),
    ]
    assert check_payload(frame.payload, max_depth=32) == "integer too large for 64 bits"
    assert repr(frame.payload[0]) == "TooBigInteger('18446744073709551616')"
    with pytest.raises(LocalProtocolError):
        encode_frame(frame)  # nothing encodes it


@pytest.mark.parametrize("literal", ["9223372036854775807", "-9223372036854775808", "-1", "0"])
@pytest.mark.parametrize("exact", [False, True])
def test_integers_at_the_bounds_are_ints(literal: str, exact: bool) -> None:
    # a run of 20 digits in a string makes the whole message be read again, exactly
    data = _event(f'[{literal}, "12345678901234567890"]' if exact else f'[{literal}, "x"]')
    if exact:
        assert _may_hold_big_integer(data)
    frame = decode_client_message(data)[0]
    assert isinstance(frame, UpstreamEvent)
    assert frame.payload[0] == int(literal)
    assert type(frame.payload[0]) is int
    assert check_payload(frame.payload, max_depth=1) is None


def test_big_integers_in_a_batch_affect_their_event_only() -> None:
    events = [_event('"fine"', "1"), _event("123456789012345678901", "2"), _event("[7]", "3")]
    frames = decode_client_message("[" + ",".join(events) + "]")
    assert [f.payload for f in frames if isinstance(f, UpstreamEvent)] == [
        "fine",
        TooBigInteger("123456789012345678901"),
        [7],
    ]
    assert [
        check_payload(f.payload, max_depth=4) for f in frames if isinstance(f, UpstreamEvent)
    ] == [
        None,
        "integer too large for 64 bits",
        None,
    ]


def test_presence_metadata_too() -> None:
    (frame,) = decode_client_message(
        '{"type":"meta","kind":"presence","channel":"c","status":"online",'
        '"metadata":{"id":99999999999999999999}}'
    )
    assert isinstance(frame, PresenceUpdate)
    assert frame.metadata == {"id": TooBigInteger("99999999999999999999")}
    assert check_payload(frame.metadata, max_depth=32) == "integer too large for 64 bits"


@pytest.mark.parametrize(
    ("seq", "words"),
    [
        ("18446744073709551616", "integer 18446744073709551616 out of range"),
        ("-9223372036854775809", "integer -9223372036854775809 out of range"),
        ("123456789012345678901234567890", "out of range"),
        ("9223372036854775808", "out of range"),
    ],
)
def test_an_integer_beyond_64_bits_in_a_protocol_field_is_a_protocol_error(
    seq: str, words: str
) -> None:
    for data in (_event("1", seq), f"[{_event('1', '1')},{_event('1', seq)}]"):
        with pytest.raises(ProtocolError) as info:
            decode_client_message(data)
        assert info.value.field in ("seq", "[1].seq")
        assert words in str(info.value)
    # and in what a server sends (read as orjson reads it: a float, not an integer)
    with pytest.raises(ProtocolError) as info:
        decode_server_message(f'{{"type":"ack","ack_seq":{seq}}}')
    assert info.value.field == "ack_seq"


def test_a_run_of_digits_in_a_string_is_left_as_it_is() -> None:
    text = "id 12345678901234567890123 and -1234567890123456789 \\u00e9 \U0001f600 \\ud83d\\ude00"
    payload = {"t": text, "12345678901234567890": ["-09876543210987654321"]}
    data = _event(json.dumps(payload))
    frame = decode_client_message(data)[0]
    assert isinstance(frame, UpstreamEvent)
    assert frame.payload == json.loads(json.dumps(payload))
    assert decode_client_message(data.encode()) == [frame]
    assert check_payload(frame.payload, max_depth=2) is None


def test_a_deep_message_read_again_is_a_protocol_error() -> None:
    # orjson accepts 1,000 levels; the standard library's reader may not: a ProtocolError all the same
    deep = "[" * 1000 + "123456789012345678901234567890" + "]" * 1000
    with pytest.raises(ProtocolError):
        decode_client_message(_event(deep))


def test_a_digit_run_in_a_string_costs_no_exact_re_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slow exact re-read runs only when orjson made a float beyond 64 bits of something:
    digits in strings (or big integers within 64 bits) never cost it."""
    from trio_realtime._protocol import _codec

    def refuse(data: object) -> object:
        raise AssertionError("re-read")

    monkeypatch.setattr(_codec, "_loads_exact", refuse)
    frames = decode_client_message(_event('{"id": "123456789012345678901234567890", "n": 1.5}'))
    assert frames[0].payload == {"id": "123456789012345678901234567890", "n": 1.5}  # type: ignore[union-attr]
    decode_client_message(_event("[12345678901234567890, -9223372036854775808]"))
    with pytest.raises(AssertionError, match="re-read"):
        decode_client_message(_event("123456789012345678901234567890"))


def test_what_orjson_refuses_is_still_refused() -> None:
    for payload in ("NaN", "Infinity", '"\\ud800"', "1e400", "[12345678901234567890,]"):
        with pytest.raises(ProtocolError):
            decode_client_message(_event(payload))


# Integers of any size, floats and strings with digit runs; read exactly, as the standard library
# reads JSON, with TooBigInteger for integers outside 64 bits.
wide_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.text("0123456789-", min_size=18, max_size=24),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def _expected(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _expected(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_expected(item) for item in value]
    if type(value) is int and not MIN <= value < 2**64:
        # orjson reads up to 2**64 - 1 as an int (check_payload refuses those over MAX); beyond,
        # it made a float, and the message is read again exactly.
        return TooBigInteger(str(value))
    return value


@settings(max_examples=100)
@given(wide_values)
def test_payloads_are_read_exactly(payload: Any) -> None:
    data = _event(json.dumps(payload))
    expected = _expected(payload)
    for form in (data, data.encode(), bytearray(data.encode()), memoryview(data.encode())):
        (frame,) = decode_client_message(form)
        assert isinstance(frame, UpstreamEvent)
        assert frame.payload == expected


# --- the scan for long digit runs ----------------------------------------------------------------

_RUN = re.compile(r"[0-9]{20}|-[0-9]{19}")

scan_text = st.lists(
    st.text("0123456789", min_size=1, max_size=24)
    | st.sampled_from(["-", "x", "é", "\U0001f600", "-" * 20, " "]),
    max_size=12,
).map("".join)


@settings(max_examples=200)
@given(scan_text, st.integers(0, 3))
def test_the_scan_finds_exactly_the_runs(text: str, shift: int) -> None:
    text = "x" * shift + text  # every alignment against the 4-byte sample
    expected = _RUN.search(text) is not None
    assert _may_hold_big_integer(text) is expected
    encoded = text.encode()
    assert _may_hold_big_integer(encoded) is expected
    assert _may_hold_big_integer(bytearray(encoded)) is expected
    assert _may_hold_big_integer(memoryview(encoded)) is expected
