"""The client session (sans-I/O): request ids and answers, subscriptions and their one position,
fatal errors and protocol errors as must-close, user-level events. No trio, no sockets."""

from __future__ import annotations

from typing import Any

import orjson

from trio_realtime._protocol import (
    Ack,
    Answered,
    ChannelPosition,
    ChannelResume,
    ClientSession,
    CloseCode,
    Error,
    Gap,
    Message,
    MustClose,
    Ping,
    Receipts,
    ReceiptsQuery,
    ResumeResponse,
    SendRefused,
    ServerNotice,
    SessionStarted,
    Subscribed,
    SubscriptionStarted,
    decode_client_message,
    encode_frame,
)


def resume_response(ack_seq: int = 0, **channels: ChannelResume) -> bytes:
    return encode_frame(ResumeResponse("c1", "s1", ack_seq, 30_000, 1 << 20, 0, channels))


def event(channel: str, offset: int, epoch: str = "e1") -> bytes:
    return encode_frame(Message(channel, offset, epoch, "chat", {"n": offset}, 0, "bob"))


def sent(data: bytes) -> list[Any]:
    return decode_client_message(data)


def linked(session: ClientSession, response: bytes | None = None) -> list[Any]:
    session.start_link("c1", 0, "token")
    return list(session.receive_data(response or resume_response()))


def test_resume_carries_the_positions_and_the_session_owns_them() -> None:
    session = ClientSession({"room": ChannelPosition(4, "e1")})
    resume = sent(session.start_link("c1", 7, "token"))[0]
    assert resume.channels == {"room": ChannelPosition(4, "e1")}
    assert resume.last_ack_seq == 7
    events = list(session.receive_data(resume_response(3, room=ChannelResume("e1", 9, True))))
    assert events == [
        SessionStarted(3, 1 << 20),
        SubscriptionStarted("room", ChannelPosition(4, "e1")),
    ]
    # Received is not delivered: the position moves when the application has the message.
    [message] = session.receive_data(event("room", 5))
    assert session.positions["room"] == ChannelPosition(4, "e1")
    session.delivered(message)
    assert session.positions["room"] == ChannelPosition(5, "e1")
    # A new link resumes from what was delivered, not from what was received.
    assert list(session.receive_data(event("room", 6)))  # received, never delivered
    session.link_lost()
    resume = sent(session.start_link("c1", 0, "token"))[0]
    assert resume.channels == {"room": ChannelPosition(5, "e1")}


def test_lost_history_and_duplicates() -> None:
    session = ClientSession({"room": ChannelPosition(4, "e1")})
    session.start_link("c1", 0, None)
    events = list(session.receive_data(resume_response(0, room=ChannelResume("e1", 9, False))))
    assert Gap("room", "e1", 5, 9) in events
    assert list(session.receive_data(event("room", 9))) == []  # at or before the position
    assert session.duplicates_dropped == 1


def test_a_subscription_made_offline_is_asked_for_once_the_link_is_up() -> None:
    session = ClientSession()
    assert session.subscribe("room", None) is None  # no link: nothing to send yet
    linked(session)
    [subscribe] = sent(session.take_control())
    assert (subscribe.channel, subscribe.offset) == ("room", None)
    answer = Subscribed(subscribe.rid, "room", "e1", 12, False)
    # Nobody awaits that rid: the answer starts the subscription, and that is all.
    assert list(session.receive_data(encode_frame(answer))) == [
        SubscriptionStarted("room", ChannelPosition(12, "e1"))
    ]


def test_request_ids_are_allocated_and_answers_matched() -> None:
    session = ClientSession()
    linked(session)
    first = session.request(lambda rid: ReceiptsQuery(rid, "a"))
    second = session.subscribe("b", ChannelPosition(0))
    assert second is not None
    assert first.rid != second.rid
    assert [f.rid for f in sent(session.take_control())] == [first.rid, second.rid]
    receipts = Receipts(first.rid, "a", {"bob": 3})
    events = list(session.receive_data(encode_frame(receipts)))
    # The answer, and the frame itself for the receipts service.
    assert events == [Answered(first.rid, receipts), receipts]
    refusal = Error("forbidden", "no", rid=second.rid)
    assert list(session.receive_data(encode_frame(refusal))) == [Answered(second.rid, refusal)]


def test_a_forgotten_request_and_a_lost_link() -> None:
    session = ClientSession()
    linked(session)
    late = session.request(lambda rid: ReceiptsQuery(rid, "a"))
    lost = session.request(lambda rid: ReceiptsQuery(rid, "b"))
    session.take_control()
    session.forget(late.rid)
    events = list(session.receive_data(encode_frame(Receipts(late.rid, "a", {}))))
    assert events == [Receipts(late.rid, "a", {})]  # no Answered: nobody waits any more
    assert session.link_lost() == [lost.rid]
    assert not session.is_open


def test_errors_become_outcomes_notices_or_must_close() -> None:
    session = ClientSession()
    linked(session)
    session.send_events([(1, orjson.dumps({"type": "event"}))])
    refused = Error("invalid_payload", "too deep", seq=1)
    assert list(session.receive_data(encode_frame(refused))) == [
        SendRefused(1, "invalid_payload", "too deep")
    ]
    notice = Error("typing_limit", "slow down")
    assert list(session.receive_data(encode_frame(notice))) == [
        ServerNotice("typing_limit", "slow down")
    ]
    fatal = Error("client_id_taken", "not yours", fatal=True)
    assert list(session.receive_data(encode_frame(fatal))) == [
        MustClose(CloseCode.FORBIDDEN, "server error client_id_taken: not yours")
    ]


def test_a_protocol_error_by_the_server_ends_with_must_close() -> None:
    session = ClientSession()
    linked(session)
    events = list(
        session.receive_data(b'[{"type": "ack", "ack_seq": 0}, {"type": "ack", "ack_seq": 5}]')
    )
    assert events[0] == Ack(0)
    assert isinstance(events[-1], MustClose)
    assert events[-1].code == CloseCode.PROTOCOL_ERROR


def test_a_ping_is_answered_by_the_session() -> None:
    session = ClientSession()
    linked(session)
    assert list(session.receive_data(encode_frame(Ping(42)))) == []
    assert session.has_control
    [pong] = sent(session.take_control())
    assert pong.t == 42


def test_unsubscribe_forgets_the_position() -> None:
    session = ClientSession({"room": ChannelPosition(4, "e1")})
    assert session.unsubscribe("room") is None  # offline: nothing to send
    assert "room" not in session.positions
    assert session.unsubscribe("room") is None
    linked(session)
    session.subscribe("x", None)
    session.take_control()
    request = session.unsubscribe("x")
    assert request is not None
    assert request.channel == "x"
    assert "x" not in session.positions
    [frame] = sent(session.take_control())
    assert (type(frame).__name__, frame.channel) == ("Unsubscribe", "x")
    session.link_lost()
    assert sent(session.start_link("c1", 0, None))[0].channels == {}
