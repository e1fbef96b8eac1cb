"""ClientProtocol and ServerProtocol: the state table, and the rules of PROTOCOL.md sections 2-4,
exercised without sockets."""

from __future__ import annotations

import pytest

from trio_realtime import LocalProtocolError, ProtocolError
from trio_realtime._protocol import (
    Ack,
    ChannelPosition,
    ChannelResume,
    ClientProtocol,
    CloseAction,
    CloseCode,
    DuplicateEvent,
    Error,
    Gap,
    Message,
    OutOfOrderEvent,
    Ping,
    Pong,
    ReadReceipt,
    Receipts,
    ReceiptsQuery,
    Resume,
    ResumeResponse,
    ServerProtocol,
    Skip,
    State,
    Subscribe,
    Subscribed,
    Typing,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
    close_action,
    decode_server_message,
    encode_frame,
)
from trio_realtime._protocol._state import TABLE, Role

CID = "c-test"


def event(seq: int, channel: str = "room:1") -> UpstreamEvent:
    return UpstreamEvent(seq, channel, "chat", {"n": seq}, 1000 + seq, f"{CID}:{seq}")


def down(offset: int, epoch: str = "e1", channel: str = "room:1") -> Message:
    return Message(channel, offset, epoch, "chat", {"n": offset}, 1, "alice", None)


def response(ack_seq: int = 0, channels: dict[str, ChannelResume] | None = None) -> ResumeResponse:
    return ResumeResponse(CID, "s-1", ack_seq, 15000, 1 << 20, 0, channels or {})


def handshake(
    ack_seq: int = 0,
    positions: dict[str, ChannelPosition] | None = None,
    answers: dict[str, ChannelResume] | None = None,
) -> tuple[ClientProtocol, ServerProtocol]:
    """A client and server connected through the resume handshake, with the events drained."""
    client, server = ClientProtocol(), ServerProtocol()
    server.receive_data(client.send(Resume(CID, ack_seq, "tok", positions or {})))
    (resume,) = server.events()
    assert isinstance(resume, Resume)
    client.receive_data(server.send(response(ack_seq, answers)))
    list(client.events())
    assert client.state is State.OPEN
    assert server.state is State.OPEN
    return client, server


# --- the state table -----------------------------------------------------------------------------


def test_table_covers_every_role_and_state() -> None:
    assert set(TABLE) == {(role, state) for role in Role for state in State}
    assert TABLE[Role.CLIENT, State.CLOSED] == {}
    assert TABLE[Role.SERVER, State.CLOSED] == {Ack: State.CLOSED}  # what it stored before


def test_client_must_send_resume_first() -> None:
    client = ClientProtocol()
    for frame in (event(1), Subscribe(1, "room"), Ping(1), Typing("room", True)):
        with pytest.raises(LocalProtocolError):
            ClientProtocol().send(frame)
    assert client.state is State.IDLE
    client.send(Resume(CID))
    assert client.state is State.RESUMING
    client.send(Ping(5))  # heartbeats may pass while resuming
    with pytest.raises(LocalProtocolError):
        client.send(event(1))
    assert client.state is State.CLOSED  # a local protocol error is a bug: the object is done


@pytest.mark.parametrize(
    "frame",
    [event(1), Subscribe(1, "room"), Ping(3), Pong(3), Typing("r", True), ReadReceipt("r", 1)],
)
def test_server_rejects_frames_before_resume(frame: object) -> None:
    server = ServerProtocol()
    with pytest.raises(ProtocolError) as info:
        server.receive_data(encode_frame(frame))  # type: ignore[arg-type]
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert server.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        server.receive_data(encode_frame(Ping(1)))


def test_server_rejects_events_while_resuming_and_second_resume() -> None:
    server = ServerProtocol()
    server.receive_data(encode_frame(Resume(CID)))
    server.receive_data(encode_frame(Ping(1)))  # allowed
    with pytest.raises(ProtocolError):
        server.receive_data(encode_frame(event(1)))

    _, server = handshake()
    with pytest.raises(ProtocolError):
        server.receive_data(encode_frame(Resume(CID)))


def test_server_may_not_send_before_resume_response() -> None:
    server = ServerProtocol()
    server.send(Error("unauthorized", "bad token", fatal=True))  # errors before close are fine
    with pytest.raises(LocalProtocolError):
        server.send(response())
    server = ServerProtocol()
    server.receive_data(encode_frame(Resume(CID)))
    with pytest.raises(LocalProtocolError):
        server.send(Ack(0))


def test_client_rejects_frames_before_resume_response() -> None:
    client = ClientProtocol()
    client.send(Resume(CID))
    with pytest.raises(ProtocolError):
        client.receive_data(encode_frame(Ack(0)))
    client = ClientProtocol()
    client.send(Resume(CID))
    client.receive_data(encode_frame(Error("unauthorized", "no", fatal=True)))
    assert isinstance(next(client.events()), Error)


def test_unsupported_protocol_version_closes_4400() -> None:
    server = ServerProtocol()
    with pytest.raises(ProtocolError) as info:
        server.receive_data(encode_frame(Resume(CID, protocol=2)))
    assert info.value.close_code == CloseCode.UNSUPPORTED_PROTOCOL
    assert server.close_code == 4400


def test_nothing_passes_after_close() -> None:
    client, _ = handshake()
    client.connection_closed(1001)
    assert client.close_code == 1001
    with pytest.raises(LocalProtocolError):
        client.send(event(1))
    with pytest.raises(LocalProtocolError):
        client.receive_data(encode_frame(Ack(0)))


def test_batch_frames_before_a_bad_one_are_applied() -> None:
    _, server = handshake()
    data = b"[" + encode_frame(event(1)) + b"," + encode_frame(Resume(CID)) + b"]"
    with pytest.raises(ProtocolError):
        server.receive_data(data)
    assert list(server.events()) == [event(1)]


# --- upstream (section 3), server side -----------------------------------------------------------


def test_in_order_events_are_delivered_and_acked_cumulatively() -> None:
    client, server = handshake()
    server.receive_data(client.send_many([event(1), event(2), event(3)]))
    assert list(server.events()) == [event(1), event(2), event(3)]
    assert server.received_seq == 3
    ack = server.ack()
    client.receive_data(ack)
    assert list(client.events()) == [Ack(3)]
    assert client.ack_seq == 3


def test_resume_restores_the_stored_ack_seq_and_dedups_retransmissions() -> None:
    # The store says seq 1..5 are durable; the client crashed before it learnt that about 4 and 5.
    client, server = ClientProtocol(), ServerProtocol()
    server.receive_data(client.send(Resume(CID, last_ack_seq=3)))
    list(server.events())
    client.receive_data(server.send(response(ack_seq=5)))
    assert client.next_seq == 6  # the client drops 4 and 5 from its journal, sends from 6
    assert server.received_seq == 5

    # A client that retransmits them anyway gets them listed as duplicates, not published again.
    server2 = ServerProtocol()
    server2.receive_data(encode_frame(Resume(CID)))
    list(server2.events())
    server2.send(response(ack_seq=5))
    server2.receive_data(b"[" + b",".join(encode_frame(event(s)) for s in (4, 5, 6)) + b"]")
    assert list(server2.events()) == [
        DuplicateEvent(4, f"{CID}:4"),
        DuplicateEvent(5, f"{CID}:5"),
        event(6),
    ]
    assert server2.pending_duplicates == (4, 5)
    assert server2.ack() == encode_frame(Ack(6, (4, 5)))
    assert server2.pending_duplicates == ()


def test_duplicates_wait_for_the_ack_that_covers_them() -> None:
    client, server = handshake()
    server.receive_data(client.send_many([event(1), event(2)]))
    list(server.events())
    server.receive_data(encode_frame(event(2)))  # a retransmission of a not yet committed seq
    assert list(server.events()) == [DuplicateEvent(2, f"{CID}:2")]
    assert server.ack(1) == encode_frame(Ack(1, ()))
    assert server.ack(2) == encode_frame(Ack(2, (2,)))


def test_a_skip_consumes_its_seq_without_an_event() -> None:
    # A withdrawn event travels as a skip: in order it is handed over (nothing to store) and the
    # ack moves past it; a skip the server already has is no duplicate to report (no event was
    # sent twice); a skip ahead of the next seq is out of order, like an event.
    client, server = handshake(ack_seq=4)
    server.receive_data(client.send_many([event(5), Skip(6), event(7)]))
    assert list(server.events()) == [event(5), Skip(6), event(7)]
    assert server.received_seq == 7
    server.receive_data(encode_frame(Skip(6)))
    assert list(server.events()) == [DuplicateEvent(6, None)]
    assert server.pending_duplicates == ()
    client.receive_data(server.ack())
    assert list(client.events()) == [Ack(7)]
    server.receive_data(encode_frame(Skip(9)))
    assert list(server.events()) == [OutOfOrderEvent(seq=9, expected=8)]
    with pytest.raises(LocalProtocolError, match="seq 9 sent where 8 is next"):
        client.send(Skip(9))


def test_out_of_order_seq() -> None:
    _, server = handshake(ack_seq=7)
    server.receive_data(encode_frame(event(8)))
    server.receive_data(b"[" + encode_frame(event(10)) + b"," + encode_frame(event(9)) + b"]")
    assert list(server.events()) == [event(8), OutOfOrderEvent(seq=10, expected=9)]
    assert server.received_seq == 8  # nothing after the skip is taken
    server.receive_data(encode_frame(event(9)))
    assert list(server.events()) == []
    data = server.send(Error("out_of_order", "expected seq 9", seq=None, fatal=True))
    assert b'"fatal":true' in data


def test_rejected_event_counts_as_consumed() -> None:
    client, server = handshake()
    server.receive_data(client.send_many([event(1), event(2, "secret"), event(3)]))
    list(server.events())
    rejection = server.send(Error("forbidden", "no access to secret", seq=2))
    client.receive_data(rejection)
    client.receive_data(server.ack(3))
    assert list(client.events()) == [Error("forbidden", "no access to secret", seq=2), Ack(3)]


def test_server_ack_and_error_bounds() -> None:
    client, server = handshake(ack_seq=2)
    server.receive_data(client.send(event(3)))
    with pytest.raises(LocalProtocolError):
        ServerProtocol().ack()  # not open
    with pytest.raises(LocalProtocolError):
        server.send(Ack(4))  # beyond what was received
    _, server = handshake(ack_seq=2)
    server.receive_data(encode_frame(event(3)))
    server.ack(3)
    with pytest.raises(LocalProtocolError):
        server.send(Ack(2))  # backwards
    _, server = handshake(ack_seq=2)
    with pytest.raises(LocalProtocolError):
        server.send(Error("forbidden", "x", seq=2))  # already acked: not pending


def test_a_server_closed_on_a_bad_frame_still_acks_what_it_received_before() -> None:
    client, server = handshake()
    server.receive_data(client.send(event(1)))
    with pytest.raises(ProtocolError):
        server.receive_data(b'{"type":"nope"}')
    assert server.state is State.CLOSED
    assert decode_server_message(server.ack(1)) == [Ack(1)]  # stored meanwhile: say so
    with pytest.raises(LocalProtocolError):
        server.ack(2)  # never received
    with pytest.raises(LocalProtocolError):
        server.send(Pong(1))  # nothing else once closed


# --- upstream, client side -----------------------------------------------------------------------


def test_client_seq_must_be_contiguous() -> None:
    client, _ = handshake(ack_seq=10)
    assert client.next_seq == 11
    client.send(event(11))
    with pytest.raises(LocalProtocolError) as info:
        client.send(event(13))  # 12 skipped: would be a silent loss
    assert info.value.field == "seq"


def test_client_rejects_impossible_acks() -> None:
    client, _ = handshake()
    client.send_many([event(1), event(2)])
    with pytest.raises(ProtocolError):
        client.receive_data(encode_frame(Ack(3)))  # never sent
    client, _ = handshake()
    client.send_many([event(1), event(2)])
    client.receive_data(encode_frame(Ack(2)))
    with pytest.raises(ProtocolError):
        client.receive_data(encode_frame(Ack(1)))  # backwards
    client, _ = handshake()
    with pytest.raises(ProtocolError):
        client.receive_data(encode_frame(Error("forbidden", "x", seq=1)))  # seq never sent


# --- downstream (section 4) ----------------------------------------------------------------------


def test_resume_recovered_then_replay_and_dedup_by_offset() -> None:
    client, server = handshake(
        positions={"room:1": ChannelPosition(17, "e1")},
        answers={"room:1": ChannelResume("e1", 20, True)},
    )
    assert server.subscriptions == {"room:1"}
    assert client.cursors["room:1"] == ChannelPosition(17, "e1")
    # Replay 18..20, with 17 and 19 sent twice (e.g. a replay racing a live publish).
    client.receive_data(server.send_many([down(o) for o in (17, 18, 19, 19, 20)]))
    assert [e.offset for e in client.events()] == [18, 19, 20]
    assert client.duplicates_dropped == 2
    assert client.cursors["room:1"] == ChannelPosition(20, "e1")


def test_resume_not_recovered_reports_the_gap() -> None:
    client, server = ClientProtocol(), ServerProtocol()
    server.receive_data(
        client.send(
            Resume(CID, 0, None, {"a": ChannelPosition(17, "e1"), "b": ChannelPosition(4, "old")})
        )
    )
    list(server.events())
    client.receive_data(
        server.send(
            response(0, {"a": ChannelResume("e1", 90, False), "b": ChannelResume("new", 2, False)})
        )
    )
    events = list(client.events())
    assert Gap("a", "e1", 18, 90) in events
    assert Gap("b", "new", 1, 2) in events
    assert client.cursors["a"] == ChannelPosition(90, "e1")
    # Events from the head on are delivered.
    client.receive_data(server.send(down(91, channel="a")))
    assert [e.offset for e in client.events()] == [91]


def test_missing_channel_in_resume_response_is_an_error() -> None:
    client, server = ClientProtocol(), ServerProtocol()
    server.receive_data(client.send(Resume(CID, 0, None, {"a": ChannelPosition(1, "e")})))
    with pytest.raises(ProtocolError):
        client.receive_data(server.send(response(0, {})))


def test_gap_inside_a_live_stream_and_epoch_change() -> None:
    client, server = handshake()
    server.receive_data(client.send(Subscribe(1, "room:1")))
    assert list(server.events()) == [Subscribe(1, "room:1")]
    client.receive_data(server.send(Subscribed(1, "room:1", "e1", 5, True)))
    assert list(client.events()) == [Subscribed(1, "room:1", "e1", 5, True)]
    client.receive_data(server.send_many([down(6), down(9), down(3, epoch="e2")]))
    assert list(client.events()) == [
        down(6),
        Gap("room:1", "e1", 7, 8),
        down(9),
        Gap("room:1", "e2", 1, 2),
        down(3, epoch="e2"),
    ]


def test_subscribe_from_an_offset_replays_after_it() -> None:
    client, server = handshake()
    server.receive_data(client.send(Subscribe(7, "room:1", offset=2, epoch="e1")))
    list(server.events())
    client.receive_data(server.send(Subscribed(7, "room:1", "e1", 4, True)))
    client.receive_data(server.send_many([down(2), down(3), down(4)]))
    assert [getattr(e, "offset", None) for e in client.events()] == [4, 3, 4]


def test_answers_must_match_a_request() -> None:
    client, server = handshake()
    with pytest.raises(LocalProtocolError):
        server.send(Subscribed(1, "room:1", "e", 0, True))  # nobody asked
    client, server = handshake()
    with pytest.raises(ProtocolError):
        client.receive_data(encode_frame(Unsubscribed(3, "room:1")))
    client, server = handshake()
    server.receive_data(client.send(ReceiptsQuery(4, "room:1")))
    list(server.events())
    client.receive_data(server.send(Receipts(4, "room:1", {"bob": 3})))
    assert list(client.events()) == [Receipts(4, "room:1", {"bob": 3})]
    client.send(Subscribe(5, "x"))
    with pytest.raises(LocalProtocolError):
        client.send(Subscribe(5, "y"))  # request id still in use


def test_unsubscribe_stops_delivery() -> None:
    client, server = handshake(
        positions={"room:1": ChannelPosition(0, "e1")},
        answers={"room:1": ChannelResume("e1", 0, True)},
    )
    server.receive_data(client.send(Unsubscribe(2, "room:1")))
    list(server.events())
    late = encode_frame(down(1))
    client.receive_data(server.send(Unsubscribed(2, "room:1")))
    with pytest.raises(LocalProtocolError):
        server.send(down(1))  # the server may not send to a channel no longer subscribed
    client.receive_data(late)
    assert list(client.events()) == [Unsubscribed(2, "room:1")]


def test_ping_response() -> None:
    assert Ping(42).response() == Pong(42)


# --- close codes (section 6) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (None, CloseAction.RECONNECT_BACKOFF),
        (1000, CloseAction.RECONNECT_BACKOFF),
        (1001, CloseAction.RECONNECT_NOW),
        (1006, CloseAction.RECONNECT_BACKOFF),
        (1008, CloseAction.FAIL),
        (1009, CloseAction.RECONNECT_BACKOFF),
        (4000, CloseAction.RECONNECT_BACKOFF),
        (4001, CloseAction.REFRESH_TOKEN),
        (4003, CloseAction.FAIL),
        (4008, CloseAction.RECONNECT_BACKOFF),
        (4029, CloseAction.RECONNECT_BACKOFF),
        (4400, CloseAction.FAIL),
        (4999, CloseAction.RECONNECT_BACKOFF),
    ],
)
def test_close_actions(code: int | None, action: CloseAction) -> None:
    assert close_action(code) is action
