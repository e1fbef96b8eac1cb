"""A hypothesis state machine drives one ClientProtocol and one ServerProtocol through a
conversation (sends, commits, acks, fan-out) in any interleaving, with the link dropped at any point
(in-flight messages lost, both protocol objects replaced, a resume from what each side persisted).

Whatever the interleaving: neither side raises a protocol error, the store holds every seq at most
once and in order, acks never pass what is stored, the client receives the channel without gaps
or repeats, and once the link stays up everything sent is stored, acked and received."""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_realtime._protocol import (
    Ack,
    ChannelPosition,
    ChannelResume,
    ClientProtocol,
    DuplicateEvent,
    Message,
    Resume,
    ResumeResponse,
    ServerProtocol,
    UpstreamEvent,
)

CID = "c-conv"
CHANNEL = "room"
EPOCH = "e1"


class Conversation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # What survives a dropped link: the client's journal and the server's store.
        self.journal: dict[int, int] = {}  # seq -> payload, sent and not yet acked
        self.last_seq = 0
        self.acked = 0
        self.cursor = 0  # the channel offset the client has processed
        self.received: list[int] = []  # payloads of the channel's events, as processed
        self.store: list[tuple[int, int]] = []  # the channel log: (seq, payload), offset = index+1
        self.stored_seq = 0
        self.links = 0
        self._connect()

    # --- the link ------------------------------------------------------------------------------

    def _connect(self) -> None:
        self.links += 1
        self.client = ClientProtocol()
        self.server = ServerProtocol()
        self.to_server: deque[bytes] = deque()
        self.to_client: deque[bytes] = deque()
        self.uncommitted: list[UpstreamEvent] = []
        resume = Resume(CID, self.acked, None, {CHANNEL: ChannelPosition(self.cursor, EPOCH)})
        self.server.receive_data(self.client.send(resume))
        (got,) = list(self.server.events())
        assert isinstance(got, Resume)
        position = got.channels[CHANNEL]
        head = len(self.store)
        answer = ChannelResume(EPOCH, head, position.offset <= head)
        self.to_client.append(
            self.server.send(
                ResumeResponse(
                    CID, f"s{self.links}", self.stored_seq, 30_000, 1 << 20, 0, {CHANNEL: answer}
                )
            )
        )
        self.fanned_out = position.offset  # replay from the client's position
        self.sent_up_to = None  # unknown until the resume_response arrives

    @rule()
    def drop_link(self) -> None:
        """Everything in flight and not committed is lost; both sides start a new connection."""
        self._connect()

    # --- client --------------------------------------------------------------------------------

    @rule(payload=st.integers(0, 1000))
    def send(self, payload: int) -> None:
        self.last_seq += 1
        self.journal[self.last_seq] = payload  # journaled: the send has returned

    @precondition(lambda self: self.client.session is not None)
    @rule(count=st.integers(1, 5))
    def transmit(self, count: int) -> None:
        if self.sent_up_to is None:
            self.sent_up_to = self.client.session.ack_seq  # type: ignore[union-attr]
        for seq in range(self.sent_up_to + 1, min(self.last_seq, self.sent_up_to + count) + 1):
            if seq in self.journal:
                frame = UpstreamEvent(seq, CHANNEL, "n", self.journal[seq], 1, f"{CID}:{seq}")
                self.to_server.append(self.client.send(frame))
                self.sent_up_to = seq

    @precondition(lambda self: bool(self.to_client))
    @rule()
    def client_receives(self) -> None:
        self.client.receive_data(self.to_client.popleft())
        for event in self.client.events():
            if isinstance(event, ResumeResponse | Ack):  # what the store holds: out of the journal
                for seq in [s for s in self.journal if s <= event.ack_seq]:
                    del self.journal[seq]
                self.acked = max(self.acked, event.ack_seq)
            elif isinstance(event, Message):
                assert event.offset == self.cursor + 1, (event.offset, self.cursor)
                self.received.append(event.payload)  # type: ignore[arg-type]
                self.cursor = event.offset
            else:
                raise AssertionError(f"unexpected {event!r}")  # no gap, no error

    # --- server --------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.to_server))
    @rule()
    def server_receives(self) -> None:
        self.server.receive_data(self.to_server.popleft())
        for event in self.server.events():
            if isinstance(event, UpstreamEvent):
                self.uncommitted.append(event)
            else:
                assert isinstance(event, DuplicateEvent), event

    @precondition(lambda self: self.server.resume is not None)
    @rule()
    def commit_and_ack(self) -> None:
        for event in self.uncommitted:
            assert event.seq == self.stored_seq + 1  # never stored twice, never skipped
            self.store.append((event.seq, event.payload))  # type: ignore[arg-type]
            self.stored_seq = event.seq
        self.uncommitted = []
        if self.server.received_seq > self.server.ack_seq or self.server.pending_duplicates:
            self.to_client.append(self.server.ack(self.stored_seq))

    @precondition(lambda self: self.server.resume is not None)
    @rule(count=st.integers(1, 5))
    def fan_out(self, count: int) -> None:
        for offset in range(self.fanned_out + 1, min(len(self.store), self.fanned_out + count) + 1):
            _, payload = self.store[offset - 1]
            self.to_client.append(
                self.server.send(Message(CHANNEL, offset, EPOCH, "n", payload, 1, "u", None))
            )
            self.fanned_out = offset

    # --- checks --------------------------------------------------------------------------------

    @invariant()
    def acks_never_pass_the_store(self) -> None:
        assert self.acked <= self.stored_seq <= self.last_seq

    @invariant()
    def received_is_a_prefix_of_the_log(self) -> None:
        assert self.received == [payload for _, payload in self.store[: len(self.received)]]

    def teardown(self) -> None:
        """Let the link stay up: everything sent is stored, acked and received, once."""
        self._connect()
        for _ in range(4 * (self.last_seq + len(self.store)) + 10):
            if self.to_client:
                self.client_receives()
            if self.client.session is not None:
                self.transmit(5)
            while self.to_server:
                self.server_receives()
            self.commit_and_ack()
            self.fan_out(5)
        assert not self.journal
        assert [seq for seq, _ in self.store] == list(range(1, self.last_seq + 1))
        assert self.received == [payload for _, payload in self.store]


TestConversation = Conversation.TestCase
TestConversation.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
