"""The Engine.IO v4 + Socket.IO v5 codec (transports/_socketio_codec.py).

* The examples of the protocol documents, both ways, exactly: socket.io-protocol's README
  (revision 5: "Packet encoding" and "Sample session") and its test-suite's frames,
  engine.io-protocol's README (revision 4).
* Round trips under hypothesis: every packet type, namespaces, ack ids, binary values nested
  anywhere (attachments in document order), and Engine.IO packets interleaved with them.
* Every kind of malformed input raises RemoteProtocolError naming the field; what the decoder
  would refuse, the encoder refuses with LocalProtocolError.
* The binary-attachment state machine, message by message.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_realtime import LocalProtocolError, RemoteProtocolError
from trio_realtime.transports import _socketio_codec as codec
from trio_realtime.transports._socketio_codec import (
    DEFAULT_MAX_ATTACHMENTS,
    MAX_ACK_ID,
    EioClose,
    EioMessage,
    EioNoop,
    EioOpen,
    EioPacket,
    EioPing,
    EioPong,
    EioUpgrade,
    MessageDecoder,
    SioAck,
    SioConnect,
    SioConnectError,
    SioDecoder,
    SioDisconnect,
    SioEvent,
    SioPacket,
    ack_messages,
    connect_message,
    decode_eio,
    disconnect_message,
    encode_eio,
    encode_sio,
    encode_sio_messages,
    event_messages,
    pong_message,
)


def placeholder(num: int) -> dict[str, Any]:
    return {"_placeholder": True, "num": num}


def decode_all(messages: list[str | bytes], decoder: MessageDecoder | None = None) -> list[Any]:
    """What the decoder returns for each message, in order."""
    decoder = decoder or MessageDecoder()
    return [decoder.receive(message) for message in messages]


def decode_sio(text: str, attachments: Sequence[bytes] = ()) -> SioPacket:
    """A Socket.IO packet (text without the Engine.IO ``4``) and its attachments, through a
    SioDecoder: only the last call may return the packet."""
    decoder = SioDecoder()
    results = [decoder.feed_text(text), *(decoder.feed_binary(a) for a in attachments)]
    assert results[:-1] == [None] * len(attachments)
    assert decoder.awaiting == 0
    packet = results[-1]
    assert packet is not None
    return packet


# --- socket.io-protocol README (revision 5), "Packet encoding" -----------------------------------

#: (packet, Socket.IO text, attachments), from the README's "Examples" section, in its order.
README_PACKETS: list[tuple[SioPacket, str, list[bytes]]] = [
    # Connection to a namespace
    (SioConnect("/"), "0", []),
    (
        SioConnect("/admin", {"sid": "oSO0OpakMV_3jnilAAAA"}),
        '0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}',
        [],
    ),
    (SioConnectError("/", {"message": "Not authorized"}), '4{"message":"Not authorized"}', []),
    # Sending and receiving data
    (SioEvent("/", ["foo"]), '2["foo"]', []),
    (SioEvent("/admin", ["bar"]), '2/admin,["bar"]', []),
    (
        SioEvent("/", ["baz", b"\x01\x02\x03\x04"]),
        '51-["baz",{"_placeholder":true,"num":0}]',
        [b"\x01\x02\x03\x04"],
    ),
    (
        SioEvent("/admin", ["baz", b"\x01\x02", b"\x03\x04"]),
        '52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        [b"\x01\x02", b"\x03\x04"],
    ),
    # Acknowledgement
    (SioEvent("/", ["foo"], 12), '212["foo"]', []),
    (SioAck("/admin", ["bar"], 13), '3/admin,13["bar"]', []),
    (
        SioAck("/", ["bar", b"\x01\x02\x03\x04"], 15),
        '61-15["bar",{"_placeholder":true,"num":0}]',
        [b"\x01\x02\x03\x04"],
    ),
    # Disconnection from a namespace
    (SioDisconnect("/"), "1", []),
    (SioDisconnect("/admin"), "1/admin,", []),
]


@pytest.mark.parametrize(("packet", "text", "attachments"), README_PACKETS)
def test_readme_examples_encode_exactly(
    packet: SioPacket, text: str, attachments: list[bytes]
) -> None:
    assert encode_sio(packet) == (text, attachments)
    assert encode_sio_messages(packet) == ["4" + text, *attachments]


@pytest.mark.parametrize(("packet", "text", "attachments"), README_PACKETS)
def test_readme_examples_decode_exactly(
    packet: SioPacket, text: str, attachments: list[bytes]
) -> None:
    assert decode_sio(text, attachments) == packet
    assert decode_all(["4" + text, *attachments])[-1] == packet


def test_readme_wrapping_example() -> None:
    """ "{ type: EVENT, namespace: "/", data: ["foo"] } will be sent as 42["foo"]"."""
    assert encode_sio_messages(SioEvent("/", ["foo"])) == ['42["foo"]']
    assert event_messages("foo") == ['42["foo"]']


def test_readme_sample_session_over_websocket() -> None:
    """The README's sample session (the WebSocket part, after the long-polling requests), read by
    the client and written by it: ``<`` lines come from the server, ``>`` lines from the client."""
    handshake = (
        '0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,'
        '"pingTimeout":5000,"maxPayload":1000000}'
    )
    # Request n°1's open packet, read by the client.
    assert decode_all([handshake]) == [
        EioOpen(
            sid="lv_VI97HAXpY6yYWAAAC",
            upgrades=("websocket",),
            ping_interval_ms=25000,
            ping_timeout_ms=5000,
            max_payload=1000000,
        )
    ]
    assert decode_all(["40", '40{"sid":"wZX3oN0bSVIhsaknAAAI"}', '42["hey","Jude"]']) == [
        SioConnect("/"),
        SioConnect("/", {"sid": "wZX3oN0bSVIhsaknAAAI"}),
        SioEvent("/", ["hey", "Jude"]),
    ]
    # What the server sends on the WebSocket, in order.
    server: list[str | bytes] = [
        "2probe",
        '40/admin,{"sid":"-G5j-67EZFp-q59rADQM"}',
        '461-/admin,1[{"_placeholder":true,"num":0}]',
        b"<binary>",
        "3",
    ]
    assert decode_all(server) == [
        EioPing("probe"),
        SioConnect("/admin", {"sid": "-G5j-67EZFp-q59rADQM"}),
        None,
        SioAck("/admin", [b"<binary>"], 1),
        EioPong(),
    ]
    # What the client sends, made by the encoders and helpers.
    assert [
        pong_message("probe"),
        encode_eio(EioUpgrade()),
        *event_messages("hello"),
        *event_messages("world"),
        connect_message("/admin"),
        *event_messages("tellme", namespace="/admin", ack_id=1),
        encode_eio(EioPing()),
        encode_eio(EioClose()),
    ] == [
        "3probe",
        "5",
        '42["hello"]',
        '42["world"]',
        "40/admin,",
        '42/admin,1["tellme"]',
        "2",
        "1",
    ]
    # ... and the server reads them back as the same packets.
    assert decode_all(['42["hello"]', "40/admin,", '42/admin,1["tellme"]']) == [
        SioEvent("/", ["hello"]),
        SioConnect("/admin"),
        SioEvent("/admin", ["tellme"], 1),
    ]
    # The server's answer encodes to what the session shows.
    assert encode_sio_messages(SioAck("/admin", [b"<binary>"], 1)) == [
        '461-/admin,1[{"_placeholder":true,"num":0}]',
        b"<binary>",
    ]


# --- socket.io-protocol test-suite (the frames it sends and expects) -----------------------------

#: (WebSocket messages, packet): each sent or expected by the official test-suite.
TEST_SUITE_FRAMES: list[tuple[list[str | bytes], SioPacket]] = [
    (["40"], SioConnect("/")),
    (['40{"token":"123"}'], SioConnect("/", {"token": "123"})),
    (["40/custom,"], SioConnect("/custom")),
    (['40/custom,{"token":"abc"}'], SioConnect("/custom", {"token": "abc"})),
    (['42["auth",{}]'], SioEvent("/", ["auth", {}])),
    (['42["auth",{"token":"123"}]'], SioEvent("/", ["auth", {"token": "123"}])),
    (['42/custom,["auth",{}]'], SioEvent("/custom", ["auth", {}])),
    (['42/custom,["auth",{"token":"abc"}]'], SioEvent("/custom", ["auth", {"token": "abc"}])),
    (
        ['44/random,{"message":"Invalid namespace"}'],
        SioConnectError("/random", {"message": "Invalid namespace"}),
    ),
    (["41"], SioDisconnect("/")),
    (
        ['42["message-back","message to main namespace"]'],
        SioEvent("/", ["message-back", "message to main namespace"]),
    ),
    (['42["message",1,"2",{"3":[true]}]'], SioEvent("/", ["message", 1, "2", {"3": [True]}])),
    (
        [
            '452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
            bytes([1, 2, 3]),
            bytes([4, 5, 6]),
        ],
        SioEvent("/", ["message", bytes([1, 2, 3]), bytes([4, 5, 6])]),
    ),
    (
        ['42456["message-with-ack",1,"2",{"3":[false]}]'],
        SioEvent("/", ["message-with-ack", 1, "2", {"3": [False]}], 456),
    ),
    (['43456[1,"2",{"3":[false]}]'], SioAck("/", [1, "2", {"3": [False]}], 456)),
    (
        [
            '452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
            bytes([1, 2, 3]),
            bytes([4, 5, 6]),
        ],
        SioEvent("/", ["message-with-ack", bytes([1, 2, 3]), bytes([4, 5, 6])], 789),
    ),
    (
        [
            '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
            bytes([1, 2, 3]),
            bytes([4, 5, 6]),
        ],
        SioAck("/", [bytes([1, 2, 3]), bytes([4, 5, 6])], 789),
    ),
]


@pytest.mark.parametrize(("messages", "packet"), TEST_SUITE_FRAMES)
def test_test_suite_frames_both_ways(messages: list[str | bytes], packet: SioPacket) -> None:
    assert decode_all(messages) == [None] * (len(messages) - 1) + [packet]
    assert encode_sio_messages(packet) == messages


def test_test_suite_namespaces_without_a_comma() -> None:
    """The test-suite sends ``40/custom``, ``41/custom`` and ``40/random``: a namespace may end
    at the end of the message (we always write the comma)."""
    assert decode_all(["40/custom", "41/custom", "40/random"]) == [
        SioConnect("/custom"),
        SioDisconnect("/custom"),
        SioConnect("/random"),
    ]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("4abc", "type"),  # "invalid format (unknown packet type)"
        ("42{}", "data"),  # "invalid format (invalid payload format)"
        ('42abc["message-with-ack",1,"2",{"3":[false]}]', "data"),  # "(invalid ack id)"
    ],
)
def test_test_suite_invalid_formats(message: str, field: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        MessageDecoder().receive(message)
    assert info.value.field == field


# --- engine.io-protocol README (revision 4) ------------------------------------------------------

ENGINE_IO_EXAMPLES: list[tuple[str | bytes, EioPacket]] = [
    (
        '0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,'
        '"pingTimeout":20000,"maxPayload":1000000}',
        EioOpen(
            sid="lv_VI97HAXpY6yYWAAAC",
            upgrades=("websocket",),
            ping_interval_ms=25000,
            ping_timeout_ms=20000,
            max_payload=1000000,
        ),
    ),
    ("1", EioClose()),
    ("2", EioPing()),
    ("3", EioPong()),
    ("2probe", EioPing("probe")),
    ("3probe", EioPong("probe")),
    ("4hello", EioMessage("hello")),
    (b"\x01\x02\x03\x04", EioMessage(b"\x01\x02\x03\x04")),  # "sent as is, without modification"
    ("5", EioUpgrade()),
    ("6", EioNoop()),
]


@pytest.mark.parametrize(("message", "packet"), ENGINE_IO_EXAMPLES)
def test_engine_io_examples_both_ways(message: str | bytes, packet: EioPacket) -> None:
    assert decode_eio(message) == packet
    assert encode_eio(packet) == message


def test_engine_io_handshake_of_a_websocket_only_session() -> None:
    """Over ``transport=websocket`` the test-suite expects ``upgrades: []``; servers before
    socket.io 4.1 sent no ``maxPayload``; unknown fields are ignored."""
    assert decode_eio('0{"sid":"a","upgrades":[],"pingInterval":300,"pingTimeout":200}') == EioOpen(
        "a", 300, 200
    )
    assert decode_eio(
        '0{"sid":"a","pingInterval":300,"pingTimeout":200,"maxPayload":5,"extra":[1]}'
    ) == EioOpen("a", 300, 200, max_payload=5)
    assert encode_eio(EioOpen("a", 300, 200)) == (
        '0{"sid":"a","upgrades":[],"pingInterval":300,"pingTimeout":200}'
    )


def test_bytearray_and_memoryview_messages_are_binary() -> None:
    assert decode_eio(bytearray(b"\x00")) == EioMessage(b"\x00")
    assert decode_eio(memoryview(b"\x00\x01")) == EioMessage(b"\x00\x01")
    decoder = MessageDecoder()
    assert decoder.receive('451-["a",{"_placeholder":true,"num":0}]') is None
    packet = decoder.receive(memoryview(b"xyz"))
    assert packet == SioEvent("/", ["a", b"xyz"])
    assert isinstance(packet, SioEvent)
    assert type(packet.args[1]) is bytes


# --- what a client sends -------------------------------------------------------------------------


def test_connect_message() -> None:
    assert connect_message() == "40"
    assert connect_message("/chat") == "40/chat,"
    assert connect_message("/", {"token": "123"}) == '40{"token":"123"}'
    assert (
        connect_message("/chat", {"token": "t"}, pid="p1", offset="MzUz")
        == '40/chat,{"token":"t","pid":"p1","offset":"MzUz"}'
    )
    assert connect_message(pid="p1") == '40{"pid":"p1"}'
    assert connect_message("/chat", {}) == "40/chat,{}"


def test_connect_message_refusals() -> None:
    with pytest.raises(LocalProtocolError) as info:
        connect_message(auth={"pid": "x"}, pid="y")
    assert info.value.field == "pid"
    with pytest.raises(LocalProtocolError) as info:
        connect_message(auth={"offset": "x"}, pid="y", offset="z")
    assert info.value.field == "offset"
    with pytest.raises(LocalProtocolError) as info:
        connect_message(offset="z")
    assert info.value.field == "offset"
    with pytest.raises(LocalProtocolError) as info:
        connect_message(auth={"file": b"x"})  # a CONNECT has no binary form
    assert info.value.field == "data"


def test_event_ack_disconnect_pong_messages() -> None:
    assert event_messages("chat", {"text": "hi"}) == ['42["chat",{"text":"hi"}]']
    assert event_messages("chat", "hi", namespace="/room", ack_id=7) == ['42/room,7["chat","hi"]']
    assert event_messages("upload", {"file": b"\xff"}, ack_id=0) == [
        '451-0["upload",{"file":{"_placeholder":true,"num":0}}]',
        b"\xff",
    ]
    assert ack_messages(7) == ["437[]"]
    assert ack_messages(7, "ok", namespace="/room") == ['43/room,7["ok"]']
    assert ack_messages(8, b"\x00", None) == ['461-8[{"_placeholder":true,"num":0},null]', b"\x00"]
    assert disconnect_message() == "41"
    assert disconnect_message("/room") == "41/room,"
    assert pong_message() == "3"
    assert pong_message("probe") == "3probe"


def test_event_properties() -> None:
    event = SioEvent("/", ["chat", 1, {"a": 2}], 3)
    assert event.event == "chat"
    assert event.params == [1, {"a": 2}]


# --- round trips ---------------------------------------------------------------------------------

MAX_INT64 = 2**63 - 1
#: Namespaces as the decoder accepts them (no ',', quote, bracket, brace or control character).
namespaces = st.just("/") | st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=',"[]{}'), max_size=12
).map(lambda s: "/" + s)
ack_ids = st.integers(min_value=0, max_value=MAX_ACK_ID)
keys = st.text(max_size=8).filter(lambda key: key != "_placeholder")
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=MAX_INT64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)
#: JSON values with binary leaves (bytes) anywhere.
binary_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
objects = st.dictionaries(keys, json_values, max_size=4)
event_args = st.builds(
    lambda name, rest: [name, *rest], st.text(max_size=10), st.lists(binary_values, max_size=4)
)

sio_packets: st.SearchStrategy[SioPacket] = st.one_of(
    st.builds(SioConnect, namespaces, st.none() | objects),
    st.builds(SioDisconnect, namespaces),
    st.builds(SioEvent, namespaces, event_args, st.none() | ack_ids),
    st.builds(SioAck, namespaces, st.lists(binary_values, max_size=4), ack_ids),
    st.builds(SioConnectError, namespaces, objects | st.text(max_size=10)),
)
#: Binary packets with at least one attachment, to stress the state machine.
binary_packets: st.SearchStrategy[SioPacket] = st.one_of(
    st.builds(
        SioEvent,
        namespaces,
        st.builds(
            lambda name, b, rest: [name, b, *rest],
            st.text(max_size=5),
            st.binary(),
            st.lists(binary_values, max_size=3),
        ),
        st.none() | ack_ids,
    ),
    st.builds(
        SioAck, namespaces, st.lists(binary_values, max_size=3).map(lambda v: [*v, b"!"]), ack_ids
    ),
)
eio_controls: st.SearchStrategy[EioPacket] = st.one_of(
    st.builds(EioPing, st.text(max_size=6)),
    st.builds(EioPong, st.text(max_size=6)),
    st.just(EioNoop()),
    st.just(EioUpgrade()),
    st.just(EioClose()),
    st.builds(
        EioOpen,
        st.text(min_size=1, max_size=20),
        st.integers(1, 2**31),
        st.integers(1, 2**31),
        st.lists(st.text(max_size=9), max_size=3).map(tuple),
        st.none() | st.integers(1, 2**31),
    ),
)


def binary_leaves(value: Any) -> list[bytes]:
    """The binary values in ``value``, in document order (the test's own walk)."""
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, list):
        return [leaf for item in value for leaf in binary_leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in binary_leaves(item)]
    return []


@given(sio_packets)
def test_sio_round_trip(packet: SioPacket) -> None:
    messages = encode_sio_messages(packet)
    assert all(isinstance(m, bytes) for m in messages[1:])
    results = decode_all(messages)
    assert results == [None] * (len(messages) - 1) + [packet]
    # and what the decoder gives encodes to the same messages
    decoded = results[-1]
    assert encode_sio_messages(decoded) == messages


@given(sio_packets)
def test_sio_decoder_alone_round_trip(packet: SioPacket) -> None:
    text, attachments = encode_sio(packet)
    assert decode_sio(text, attachments) == packet


@given(st.one_of(st.builds(SioEvent, namespaces, event_args, st.none() | ack_ids), binary_packets))
def test_attachments_are_the_binary_values_in_order(packet: SioEvent | SioAck) -> None:
    text, attachments = encode_sio(packet)
    leaves = binary_leaves(packet.args)
    assert attachments == leaves
    if leaves:
        code = "5" if isinstance(packet, SioEvent) else "6"
        assert text.startswith(f"{code}{len(leaves)}-")
        assert text.count('{"_placeholder":true,"num":') == len(leaves)
        for num in range(len(leaves)):
            assert f'{{"_placeholder":true,"num":{num}}}' in text
    else:
        assert text[0] in "23"
        assert "_placeholder" not in text


@given(st.one_of(sio_packets, eio_controls))
def test_eio_round_trip(packet: SioPacket | EioPacket) -> None:
    if not isinstance(packet, SioPacket):
        message = encode_eio(packet)
        assert decode_eio(message) == packet
        assert MessageDecoder().receive(message) == packet
    else:
        text, attachments = encode_sio(packet)
        assert decode_eio("4" + text) == EioMessage(text)
        for attachment in attachments:
            assert decode_eio(attachment) == EioMessage(attachment)
            assert encode_eio(EioMessage(attachment)) == attachment


@settings(max_examples=200)
@given(st.data())
def test_interleaved_stream(data: st.DataObject) -> None:
    """Socket.IO packets, binary ones among them, with Engine.IO packets inserted anywhere,
    between a header and its attachments too: every packet comes out once, in order."""
    packets = data.draw(st.lists(sio_packets | binary_packets, max_size=6))
    messages = [m for p in packets for m in encode_sio_messages(p)]
    controls = data.draw(st.lists(eio_controls, max_size=6))
    # where each control goes: before messages[i] (or at the end), controls keeping their order
    places = sorted(
        data.draw(
            st.lists(st.integers(0, len(messages)), min_size=len(controls), max_size=len(controls))
        )
    )
    stream: list[str | bytes] = []
    pending = list(zip(places, controls, strict=True))
    for i, message in enumerate([*messages, None]):
        while pending and pending[0][0] == i:
            stream.append(encode_eio(pending.pop(0)[1]))
        if message is not None:
            stream.append(message)
    decoder = MessageDecoder()
    results = [r for r in (decoder.receive(m) for m in stream) if r is not None]
    assert [r for r in results if isinstance(r, SioPacket)] == packets
    assert [r for r in results if not isinstance(r, SioPacket)] == controls
    assert decoder.awaiting == 0


# --- malformed input -----------------------------------------------------------------------------

#: (messages, field, words of the message): the last message raises.
MALFORMED: list[tuple[list[str | bytes], str | None, str]] = [
    # Engine.IO
    ([""], None, "empty text message"),
    (["7"], "type", "unknown Engine.IO packet type '7'"),
    (["x42[]"], "type", "unknown Engine.IO packet type 'x'"),
    (["1x"], None, "CLOSE packet carries no data"),
    (["5probe"], None, "UPGRADE packet carries no data"),
    (["6 "], None, "NOOP packet carries no data"),
    (["0"], None, "not valid JSON"),
    (["0[]"], None, "must be an object"),
    (['0{"pingInterval":1,"pingTimeout":1}'], "sid", "non-empty string"),
    (['0{"sid":"","pingInterval":1,"pingTimeout":1}'], "sid", "non-empty string"),
    (['0{"sid":"a","pingTimeout":1}'], "pingInterval", "positive integer, got null"),
    (['0{"sid":"a","pingInterval":2.5,"pingTimeout":1}'], "pingInterval", "got number"),
    (['0{"sid":"a","pingInterval":true,"pingTimeout":1}'], "pingInterval", "got boolean"),
    (['0{"sid":"a","pingInterval":1,"pingTimeout":0}'], "pingTimeout", "got 0"),
    (['0{"sid":"a","pingInterval":1,"pingTimeout":1,"maxPayload":"1"}'], "maxPayload", "string"),
    (['0{"sid":"a","pingInterval":1,"pingTimeout":1,"upgrades":"ws"}'], "upgrades", "array"),
    (['0{"sid":"a","pingInterval":1,"pingTimeout":1,"upgrades":[1]}'], "upgrades[0]", "string"),
    # unknown Socket.IO type digits
    (["4"], None, "empty Socket.IO packet"),
    (["4abc"], "type", "unknown Socket.IO packet type 'a'"),
    (['47["a"]'], "type", "unknown Socket.IO packet type '7'"),
    (['4-1["a"]'], "type", "unknown Socket.IO packet type '-'"),
    (['4٢["a"]'], "type", "unknown Socket.IO packet type"),  # a non-ASCII digit
    # namespaces
    (['42/chat["a","b"]'], "namespace", "not followed by ','"),
    (['42/chat{"a":1}'], "namespace", "not followed by ','"),
    (['42/chat12["a","b"]'], "namespace", "not followed by ','"),
    (['42/ch\nat,["a"]'], "namespace", "control character"),
    (['42/chat"x,["a"]'], "namespace", "not followed by ','"),
    # ack ids
    (['42abc["message-with-ack",1]'], "data", "not valid JSON"),
    (['4212345678901234567["a"]'], "ack_id", "longer than 16 digits"),
    (['429007199254740992["a"]'], "ack_id", "is over 9007199254740991"),
    (['42/chat,99999999999999999999999["a"]'], "ack_id", "longer than 16 digits"),
    (["401{}"], "ack_id", "CONNECT packet carries no ack id"),
    (["411"], "ack_id", "DISCONNECT packet carries no ack id"),
    (['441{"message":"x"}'], "ack_id", "CONNECT_ERROR packet carries no ack id"),
    (['43["bar"]'], "ack_id", "ACK needs the ack id"),
    (['461-[{"_placeholder":true,"num":0}]'], "ack_id", "ACK needs the ack id"),
    # invalid JSON
    (['42["a"'], "data", "not valid JSON"),
    (['42["a"]x'], "data", "not valid JSON"),
    (['42["a"]["b"]'], "data", "not valid JSON"),
    (["40{bad}"], "data", "not valid JSON"),
    (["42['a']"], "data", "not valid JSON"),
    (['42["a",NaN]'], "data", "not valid JSON"),
    # data of the wrong shape
    (["42"], "data", "EVENT's data must be an array starting with the event name, got nothing"),
    (["421"], "data", "got nothing"),
    (["42[]"], "data", "got []"),
    (["42[1]"], "data", "first element is number"),
    (['42[null,"a"]'], "data", "first element is null"),
    (['42[["a"]]'], "data", "first element is array"),
    (["42{}"], "data", "got object"),
    (['42"ev"'], "data", "got string"),
    (['451-[{"_placeholder":true,"num":0}]'], "data", "first element is object"),
    (["431"], "data", "ACK's data must be an array, got nothing"),
    (['431{"a":1}'], "data", "got object"),
    (["40[]"], "data", "CONNECT's data must be an object, got array"),
    (['40"token"'], "data", "got string"),
    (["40null"], "data", "got null"),
    (["41{}"], "data", "DISCONNECT carries no data"),
    (["41/chat,{}"], "data", "DISCONNECT carries no data"),
    (["44"], "data", "CONNECT_ERROR's data must be an object or a string, got nothing"),
    (["44[1]"], "data", "got array"),
    # placeholders out of range, or not numbers
    (['451-["a",{"_placeholder":true,"num":1}]'], "data[1]", "placeholder number 1"),
    (['451-["a",{"_placeholder":true,"num":-1}]'], "data[1]", "placeholder number -1"),
    (['451-["a",{"_placeholder":true,"num":"0"}]'], "data[1]", "placeholder number string"),
    (['451-["a",{"_placeholder":true,"num":0.0}]'], "data[1]", "placeholder number number"),
    (['451-["a",{"_placeholder":true}]'], "data[1]", "placeholder number null"),
    (['451-["a",{"x":[1,{"_placeholder":true,"num":3}]}]'], "data[1].x[1]", "number 3"),
    (['450-["a",{"_placeholder":true,"num":0}]'], "data[1]", "0 attachments"),
    # attachments that no placeholder matches
    (['451-["a"]'], "attachments", "attachment 0 of 1 has no placeholder"),
    (['452-["a",{"_placeholder":true,"num":0}]'], "attachments", "attachment 1 of 2"),
    (
        ['453-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]'],
        "attachments",
        "attachment 1 of 3",
    ),
    (['451-["a",{"_placeholder":false,"num":0}]'], "attachments", "attachment 0 of 1"),
    # binary messages that no packet waits for
    ([b"\x01"], None, "no binary packet is waiting"),
    (['42["a"]', b""], None, "no binary packet is waiting"),
    (['451-["a",{"_placeholder":true,"num":0}]', b"x", b"y"], None, "no binary packet is waiting"),
    # a text packet while attachments are due
    (
        ['452-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', b"x", '42["b"]'],
        None,
        "still waited for 1 attachment",
    ),
    (['451-["a",{"_placeholder":true,"num":0}]', "40"], None, "still waited for 1 attachment"),
    # attachment counts
    (['451001-["a"]'], "attachments", "1001 attachments is more than max_attachments (1000)"),
    (['4599999999999-["a"]'], "attachments", "more attachments than max_attachments"),
    (['45-["a"]'], "attachments", "needs its attachment count and '-'"),
    (['451["a"]'], "attachments", "needs its attachment count and '-'"),
    (["451"], "attachments", "needs its attachment count and '-'"),
    (['45x-["a"]'], "attachments", "needs its attachment count and '-'"),
    (['46/chat,1-["a"]'], "attachments", "BINARY_ACK packet needs its attachment count"),
]


@pytest.mark.parametrize(("messages", "field", "words"), MALFORMED)
def test_malformed_input_raises_remote_protocol_error(
    messages: list[str | bytes], field: str | None, words: str
) -> None:
    decoder = MessageDecoder()
    for message in messages[:-1]:
        decoder.receive(message)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.receive(messages[-1])
    assert info.value.field == field
    assert words in str(info.value)
    assert info.value.close_code == 4000


@given(
    st.lists(
        st.one_of(
            st.text(max_size=30).map(lambda s: "4" + s),
            st.text(alphabet='0123456-/,[]{}":_placeholdertruenum', max_size=40).map(
                lambda s: "4" + s
            ),
            st.text(max_size=20),
            st.binary(max_size=4),
        ),
        max_size=6,
    )
)
def test_any_input_decodes_or_raises_remote_protocol_error(messages: list[str | bytes]) -> None:
    decoder = MessageDecoder()
    for message in messages:
        try:
            decoder.receive(message)
        except RemoteProtocolError:
            assert decoder.awaiting == 0


def test_not_a_message() -> None:
    with pytest.raises(RemoteProtocolError, match="str or bytes, not int"):
        MessageDecoder().receive(42)  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError, match="str or bytes, not list"):
        decode_eio([])  # type: ignore[arg-type]


# --- limits --------------------------------------------------------------------------------------


def test_max_bytes_bounds_the_text_in_utf8_bytes() -> None:
    decoder = MessageDecoder(max_bytes=20)
    assert decoder.receive('42["' + "a" * 14 + '"]') == SioEvent("/", ["a" * 14])  # 20 bytes
    with pytest.raises(RemoteProtocolError) as info:
        decoder.receive('42["' + "a" * 15 + '"]')  # 21 bytes
    assert info.value.close_code == 1009
    assert "max_bytes (20 bytes)" in str(info.value)
    # 'é' is 2 bytes: 9 of them make 18 characters of UTF-8 too many for 20.
    assert decoder.receive('42["' + "é" * 7 + '"]') == SioEvent("/", ["é" * 7])  # 20 bytes
    with pytest.raises(RemoteProtocolError, match="max_bytes"):
        decoder.receive('42["' + "é" * 8 + '"]')  # 14 characters, 22 bytes
    with pytest.raises(RemoteProtocolError, match="max_bytes"):
        decoder.receive("2" + "x" * 20)  # Engine.IO packets too
    with pytest.raises(RemoteProtocolError, match="max_bytes"):
        decode_eio("4" + "€" * 7, max_bytes=21)  # 22 bytes
    assert decode_eio("4" + "€" * 7, max_bytes=22) == EioMessage("€" * 7)
    with pytest.raises(RemoteProtocolError, match="max_bytes"):
        SioDecoder(max_bytes=8).feed_text('2["abcdef"]')
    # Binary attachments are bounded by the WebSocket library's message size, not by max_bytes.
    header = '451-["a",{"_placeholder":true,"num":0}]'
    decoder = MessageDecoder(max_bytes=len(header))
    assert decoder.receive(header) is None
    assert decoder.receive(b"x" * 100) == SioEvent("/", ["a", b"x" * 100])


def test_max_attachments() -> None:
    assert DEFAULT_MAX_ATTACHMENTS == 1000
    placeholders = "".join(f',{{"_placeholder":true,"num":{i}}}' for i in range(3))
    header = '453-["a"' + placeholders + "]"
    decoder = MessageDecoder(max_attachments=3)
    assert decoder.receive(header) is None
    assert decoder.awaiting == 3
    with pytest.raises(RemoteProtocolError) as info:
        MessageDecoder(max_attachments=2).receive(header)
    assert info.value.field == "attachments"
    assert "3 attachments is more than max_attachments (2)" in str(info.value)
    with pytest.raises(RemoteProtocolError, match="more than max_attachments"):
        MessageDecoder(max_attachments=0).receive('451-["a"]')
    assert MessageDecoder(max_attachments=0).receive('450-["a"]') == SioEvent("/", ["a"])
    with pytest.raises(ValueError):
        SioDecoder(max_attachments=-1)
    with pytest.raises(ValueError):
        MessageDecoder(max_bytes=0)


def test_a_thousand_attachments() -> None:
    args = ["many", *(bytes([i % 256]) for i in range(1000))]
    messages = event_messages("many", *args[1:])
    assert len(messages) == 1001
    assert isinstance(messages[0], str)
    assert messages[0].startswith("451000-")
    assert decode_all(messages)[-1] == SioEvent("/", args)


# --- the attachment state machine ----------------------------------------------------------------


def test_state_machine_step_by_step() -> None:
    decoder = MessageDecoder()
    assert decoder.awaiting == 0
    header = '452-/chat,3["up",{"a":{"_placeholder":true,"num":1}},[{"_placeholder":true,"num":0}]]'
    assert decoder.receive(header) is None
    assert decoder.awaiting == 2
    assert decoder.receive("2") == EioPing()  # Engine.IO packets pass through
    assert decoder.awaiting == 2
    assert decoder.receive(b"zero") is None
    assert decoder.awaiting == 1
    assert decoder.receive("6") == EioNoop()
    assert decoder.receive(b"one") == SioEvent("/chat", ["up", {"a": b"one"}, [b"zero"]], 3)
    assert decoder.awaiting == 0
    # ... and the next packet starts afresh
    assert decoder.receive('42["next"]') == SioEvent("/", ["next"])


def test_back_to_back_binary_packets() -> None:
    first = encode_sio_messages(SioEvent("/", ["a", b"1", b"2"]))
    second = encode_sio_messages(SioAck("/x", [b"3"], 9))
    assert decode_all([*first, *second]) == [
        None,
        None,
        SioEvent("/", ["a", b"1", b"2"]),
        None,
        SioAck("/x", [b"3"], 9),
    ]


def test_a_placeholder_used_twice_gets_the_same_bytes() -> None:
    decoder = MessageDecoder()
    assert (
        decoder.receive('451-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]')
        is None
    )
    assert decoder.receive(b"x") == SioEvent("/", ["a", b"x", b"x"])


def test_placeholder_with_extra_keys_is_a_placeholder() -> None:
    """As in socket.io-parser, an object is a placeholder when its ``_placeholder`` is true."""
    decoder = MessageDecoder()
    assert decoder.receive('451-["a",{"num":0,"_placeholder":true,"x":1}]') is None
    assert decoder.receive(b"!") == SioEvent("/", ["a", b"!"])


def test_placeholders_in_a_text_packet_are_data() -> None:
    """Only binary packets have placeholders; in an EVENT such an object is the sender's data,
    and it round-trips as such."""
    text = '2["a",{"_placeholder":true,"num":0}]'
    packet = SioEvent("/", ["a", placeholder(0)])
    assert decode_sio(text) == packet
    assert encode_sio(packet) == (text, [])


def test_a_binary_packet_with_no_attachments() -> None:
    """``50-`` announces none: the packet is complete at once (and is re-encoded as an EVENT)."""
    decoder = MessageDecoder()
    assert decoder.receive('450-["a",1]') == SioEvent("/", ["a", 1])
    assert decoder.receive('460-/x,1["b"]') == SioAck("/x", ["b"], 1)
    assert decoder.awaiting == 0


def test_an_error_leaves_the_decoder_in_its_first_state() -> None:
    decoder = MessageDecoder()
    assert (
        decoder.receive('452-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        is None
    )
    assert decoder.receive(b"x") is None
    with pytest.raises(RemoteProtocolError):
        decoder.receive('42["b"]')
    assert decoder.awaiting == 0
    with pytest.raises(RemoteProtocolError, match="no binary packet is waiting"):
        decoder.receive(b"y")  # the attachment of the abandoned packet
    assert decoder.receive('42["c"]') == SioEvent("/", ["c"])


def test_sio_decoder_alone() -> None:
    decoder = SioDecoder()
    assert decoder.feed_text('2/a,1["x"]') == SioEvent("/a", ["x"], 1)
    assert decoder.feed_text('61-2[{"_placeholder":true,"num":0}]') is None
    assert decoder.awaiting == 1
    assert decoder.feed_binary(bytearray(b"b")) == SioAck("/", [b"b"], 2)
    with pytest.raises(RemoteProtocolError, match="no binary packet is waiting"):
        decoder.feed_binary(b"c")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed_text('42["x"]')  # with the Engine.IO "4": a CONNECT_ERROR with an ack id
    assert info.value.field == "ack_id"


def test_decoded_binary_values_are_bytes_in_place() -> None:
    decoder = MessageDecoder()
    decoder.receive('451-["a",{"deep":[[{"k":{"_placeholder":true,"num":0}}]]}]')
    packet = decoder.receive(bytearray(b"\x00\xff"))
    assert isinstance(packet, SioEvent)
    value = packet.args[1]["deep"][0][0]["k"]
    assert type(value) is bytes
    assert value == b"\x00\xff"


# --- encoding refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "field", "words"),
    [
        (SioEvent("chat", ["a"]), "namespace", "starting with '/'"),
        (SioEvent("", ["a"]), "namespace", "starting with '/'"),
        (SioConnect("/a,b"), "namespace", "holds ','"),
        (SioDisconnect('/a"b'), "namespace", "a quote"),
        (SioEvent("/a[", ["a"]), "namespace", "a bracket"),
        (SioEvent("/a\n", ["a"]), "namespace", "control"),
        (SioEvent("/\ud800", ["a"]), "namespace", "not valid Unicode"),
        (SioEvent(b"/", ["a"]), "namespace", "starting with '/'"),  # type: ignore[arg-type]
        (SioEvent("/", ["a"], -1), "ack_id", "from 0 to"),
        (SioEvent("/", ["a"], MAX_ACK_ID + 1), "ack_id", "from 0 to"),
        (SioEvent("/", ["a"], True), "ack_id", "from 0 to"),
        (SioAck("/", [], None), "ack_id", "from 0 to"),  # type: ignore[arg-type]
        (SioAck("/", [], "1"), "ack_id", "from 0 to"),  # type: ignore[arg-type]
        (SioEvent("/", []), "args", "start with the event name"),
        (SioEvent("/", [1, "a"]), "args", "start with the event name"),
        (SioEvent("/", "ab"), "args", "must be a list"),  # type: ignore[arg-type]
        (SioAck("/", {"a": 1}, 1), "args", "must be a list"),  # type: ignore[arg-type]
        (SioEvent("/", ["a", {1, 2}]), "data", "cannot encode as JSON"),
        (SioEvent("/", ["a", {1: "x"}]), "data", "cannot encode as JSON"),
        (SioEvent("/", ["a", 2**64]), "data", "cannot encode as JSON"),
        (SioEvent("/", ["a", "\ud800"]), "data", "cannot encode as JSON"),
        (SioEvent("/", ["a", b"x", placeholder(0)]), "data", '"_placeholder": true'),
        (SioAck("/", [b"x", {"k": [{"_placeholder": True}]}], 1), "data", '"_placeholder"'),
        (SioConnect("/", {"file": b"x"}), "data", "cannot encode as JSON"),
        (SioConnect("/", ["x"]), "data", "must be a dict"),  # type: ignore[arg-type]
        (SioConnectError("/", {"b": bytearray(b"x")}), "data", "cannot encode as JSON"),
        (SioConnectError("/", 1), "data", "must be a dict or a str"),  # type: ignore[arg-type]
    ],
)
def test_encoding_refuses_what_decoding_would(packet: Any, field: str, words: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_sio(packet)
    assert info.value.field == field
    assert words in str(info.value)


def test_encoding_something_that_is_not_a_packet() -> None:
    with pytest.raises(LocalProtocolError, match=r"not a Socket\.IO packet"):
        encode_sio(EioPing())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match=r"not an Engine\.IO packet"):
        encode_eio(SioConnect())  # type: ignore[arg-type]


def test_placeholder_lookalikes_are_checked_exactly() -> None:
    """The fast check counts ``"_placeholder"`` in the output; a key that merely contains it (or a
    ``_placeholder`` that is not true) is the caller's data and goes through."""
    packet = SioEvent(
        "/", ["a", b"x", {'k"_placeholder': 1, "_placeholder": False, "s": '"_placeholder"'}]
    )
    text, attachments = encode_sio(packet)
    assert attachments == [b"x"]
    assert decode_all(["4" + text, *attachments])[-1] == packet


def test_tuples_and_buffers_are_encoded_as_lists_and_bytes() -> None:
    packet = SioEvent("/", ["a", (1, bytearray(b"b")), {"m": memoryview(b"c")}])
    messages = encode_sio_messages(packet)
    assert messages == [
        '452-["a",[1,{"_placeholder":true,"num":0}],{"m":{"_placeholder":true,"num":1}}]',
        b"b",
        b"c",
    ]
    assert decode_all(messages)[-1] == SioEvent("/", ["a", [1, b"b"], {"m": b"c"}])


def test_packets_are_frozen() -> None:
    import attrs

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        SioEvent("/", ["a"]).ack_id = 1  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        EioPing().data = "x"  # type: ignore[misc]


# --- sans I/O ------------------------------------------------------------------------------------


def test_importing_the_codec_loads_no_io_library() -> None:
    """Loaded alone (without trio_realtime/__init__.py or transports/__init__.py, which load the
    WebSocket transport), the codec brings in no trio, asyncio, socket..."""
    package_dir = pathlib.Path(codec.__file__).parent.parent
    forbidden = ["anyio", "asyncio", "selectors", "socket", "trio", "trio_websocket"]
    code = f"""
import sys, types
for name, path in (("trio_realtime", {str(package_dir)!r}),
                   ("trio_realtime.transports", {str(package_dir / "transports")!r})):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
import trio_realtime.transports._socketio_codec as codec
assert codec.event_messages("a") == ['42["a"]']
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
