"""The Socket.IO bridge alone (sans I/O): our frames in, Socket.IO packets out, and back."""

from __future__ import annotations

from typing import Any

from trio_realtime._protocol import (
    Ack,
    Error,
    Message,
    Resume,
    ResumeResponse,
    Subscribe,
    Subscribed,
    UpstreamEvent,
)
from trio_realtime.transports._socketio import RecoveryState, SocketIOBridge
from trio_realtime.transports._socketio_codec import (
    EioOpen,
    SioAck,
    SioConnect,
    SioConnectError,
    SioEvent,
)


def connected(**open_fields: Any) -> SocketIOBridge:
    bridge = SocketIOBridge("/chat", state=RecoveryState())
    bridge.open = EioOpen("sid0", 25_000, 20_000, (), open_fields.get("max_payload"))
    out, _ = bridge.from_client([Resume("c1", 0, "tok")])
    assert out == ['40/chat,{"token":"tok"}']
    _, answers = bridge.from_server(SioConnect("/chat", {"sid": "s1", "pid": "p1"}))
    assert isinstance(answers[0], ResumeResponse)
    return bridge


def event(seq: int, payload: Any) -> UpstreamEvent:
    return UpstreamEvent(seq, "room", "chat", payload, 1, f"c1:{seq}")


def test_only_the_namespace_can_be_subscribed() -> None:
    bridge = connected()
    _, answers = bridge.from_client([Subscribe(1, "/chat"), Subscribe(2, "room")])
    assert answers[0] == Subscribed(1, "/chat", "p1", 0, True)
    assert isinstance(answers[1], Error)
    assert answers[1].rid == 2


def test_a_payload_the_server_cannot_take_is_rejected_not_fatal() -> None:
    bridge = connected(max_payload=1000)
    out, answers = bridge.from_client(
        [event(1, {"$binary": "not base64!"}), event(2, "x" * 2000), event(3, "ok")]
    )
    assert answers[:2] == [
        Error("invalid_payload", answers[0].message, seq=1),  # type: ignore[union-attr]
        Error("too_large", answers[1].message, seq=2),  # type: ignore[union-attr]
    ]
    assert answers[2] == Ack(2)  # consumed: the cumulative ack moves past them
    assert len(out) == 1  # only event 3 went out
    _, acked = bridge.from_server(SioAck("/chat", [{"ok": True}], 3))
    assert acked == [Ack(3)]


def test_acks_for_ids_this_link_never_emitted_are_ignored() -> None:
    bridge = connected()
    bridge.from_client([event(1, "a")])
    assert bridge.from_server(SioAck("/chat", [], 7)) == ([], [])
    assert bridge.from_server(SioAck("/chat", [], 1)) == ([], [Ack(1)])


def test_the_offset_is_taken_only_from_broadcasts() -> None:
    bridge = connected()
    _, (asked,) = bridge.from_server(SioEvent("/chat", ["ask", "question?"], ack_id=4))
    _, (broadcast,) = bridge.from_server(SioEvent("/chat", ["news", {"n": 1}, "off-1"]))
    assert isinstance(asked, Message)
    assert isinstance(broadcast, Message)
    assert asked.payload == "question?"
    assert broadcast.payload == {"n": 1}
    assert dict(bridge.state.offsets) == {2: "off-1"}


def test_only_a_whole_envelope_is_unwrapped() -> None:
    bridge = connected()
    order = {"type": "order", "data": {"id": 7}, "total": 3}
    envelope = {"channel": "room", "idempotency_key": "k", "data": {"id": 7}}
    _, (plain,) = bridge.from_server(SioEvent("/chat", ["order", order, "o1"]))
    _, (wrapped,) = bridge.from_server(SioEvent("/chat", ["order", envelope, "o2"]))
    assert isinstance(plain, Message)
    assert isinstance(wrapped, Message)
    assert (plain.payload, plain.idempotency_key) == (order, None)
    assert (wrapped.payload, wrapped.idempotency_key) == ({"id": 7}, "k")


def test_an_ack_saying_duplicate_is_an_acked_duplicate() -> None:
    bridge = connected()
    bridge.from_client([event(1, "a"), event(2, "b")])
    assert bridge.from_server(SioAck("/chat", [{"ok": True, "duplicate": True}], 2)) == ([], [])
    assert bridge.from_server(SioAck("/chat", [{"ok": True}], 1)) == ([], [Ack(2, (2,))])


def test_a_namespace_the_server_does_not_have_fails_at_once() -> None:
    """A CONNECT_ERROR "Invalid namespace" cannot be fixed by another token: fatal forbidden;
    any other refusal is the middleware's (unauthorized: the token is refreshed)."""
    for message, code in (("Invalid namespace", "forbidden"), ("bad token", "unauthorized")):
        bridge = SocketIOBridge("/chat", state=RecoveryState())
        bridge.open = EioOpen("sid0", 25_000, 20_000, (), None)
        bridge.from_client([Resume("c1", 0, "tok")])
        out, answers = bridge.from_server(SioConnectError("/chat", {"message": message}))
        assert out == []
        (error,) = answers
        assert isinstance(error, Error)
        assert (error.code, error.fatal) == (code, True)


def test_an_event_the_server_asks_an_ack_for_is_acked_at_once() -> None:
    bridge = connected()
    out, answers = bridge.from_server(SioEvent("/chat", ["news", {"n": 1}], ack_id=7))
    assert out == ["43/chat,7[]"]  # ACK, namespace, id 7, no data
    assert len(answers) == 1
    assert isinstance(answers[0], Message)
    out, _ = bridge.from_server(SioEvent("/chat", ["news", {"n": 2}]))
    assert out == []  # no ack asked: none sent
