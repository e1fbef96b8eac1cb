"""A client and a server protocol object talking without any network: the resume handshake, a batch
of events, a cumulative ack, and a retransmission after a "crash" that the server deduplicates.

Run it: python examples/protocol_walkthrough.py
"""

from __future__ import annotations

from trio_realtime._protocol import (
    ClientProtocol,
    Resume,
    ResumeResponse,
    ServerProtocol,
    UpstreamEvent,
    encode_frame,
)

CLIENT_ID = "c-example"


def event(seq: int, text: str) -> UpstreamEvent:
    return UpstreamEvent(seq, "room:1", "chat_message", {"text": text}, 0, f"{CLIENT_ID}:{seq}")


def connect(server_ack_seq: int) -> tuple[ClientProtocol, ServerProtocol]:
    """One connection: the client resumes, the server answers with what its store holds."""
    client, server = ClientProtocol(), ServerProtocol()
    server.receive_data(client.send(Resume(CLIENT_ID, last_ack_seq=0, token="secret")))
    (resume,) = server.events()
    print(f"server <- {resume!r}")  # the token is not shown
    answer = ResumeResponse(CLIENT_ID, "session-1", server_ack_seq, 15000, 1 << 20, 0)
    client.receive_data(server.send(answer))
    print(
        f"client <- resume_response: ack_seq={answer.ack_seq}; next seq to send: {client.next_seq}"
    )
    list(client.events())
    return client, server


def main() -> None:
    client, server = connect(server_ack_seq=0)
    message = client.send_many([event(1, "hello"), event(2, "world")])
    print(f"wire: {message.decode()}")
    server.receive_data(message)
    for item in server.events():
        print(f"server stores and publishes {item.seq}: {item.payload}")
    # ... the store commits, then:
    ack = server.ack()
    client.receive_data(ack)
    print(f"client <- {list(client.events())}")

    # The server had stored 1 and 2 when the client "crashed" before it saw the ack. After the
    # restart its journal still holds both, but the resume tells it the server has them.
    client, server = connect(server_ack_seq=2)
    # A peer that retransmits seq 2 anyway (say, an older client) is not published twice:
    server.receive_data(encode_frame(event(2, "world")))
    server.receive_data(client.send(event(3, "after the restart")))
    print(f"server <- {list(server.events())}")
    print(f"client <- {server.ack().decode()}")


if __name__ == "__main__":
    main()
