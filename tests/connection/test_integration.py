"""The client against the reference server over real loopback WebSockets."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import attrs
import pytest
import trio

from trio_realtime import (
    Acked,
    ConnectionFailed,
    ConnectionState,
    Gap,
    Message,
    Rejected,
    open_realtime,
)
from trio_realtime._journal import recover
from trio_realtime._outbox import Outbox
from trio_realtime.server import HmacAuthenticator, ServerConfig, make_token

from ..helpers import collect, held_fsyncs
from .conftest import FAST, running_server, url


async def test_send_is_acked_and_stored(data: Path) -> None:
    async with (
        running_server(data) as server,
        open_realtime(url(server), journal_dir=data / "a", token="alice", config=FAST) as conn,
    ):
        assert conn.state is ConnectionState.CONNECTED
        receipt = await conn.send("room:1", "chat_message", {"text": "hi"})
        assert await receipt.wait() == Acked(1, False)
        assert conn.pending_count == 0
        (stored,) = await server.store.read("room:1", 0, 10)
        assert (stored.payload, stored.sender, stored.offset) == ({"text": "hi"}, "alice", 1)
        assert stored.idempotency_key == receipt.idempotency_key


async def test_two_clients_each_message_once_in_order(data: Path) -> None:
    async with (
        running_server(data) as server,
        open_realtime(url(server), journal_dir=data / "a", token="alice", config=FAST) as alice,
        open_realtime(url(server), journal_dir=data / "b", token="bob", config=FAST) as bob,
    ):
        await alice.subscribe("room:1")
        await bob.subscribe("room:1")
        receipts = await bob.send_many("room:1", "tick", list(range(300)))
        await alice.send("room:1", "chat", "from alice")
        assert [r.seq for r in receipts] == list(range(1, 301))
        got = await collect(alice, "room:1", 301)
        assert [m.offset for m in got] == list(range(1, 302))  # each once, in offset order
        assert [m.payload for m in got if m.sender == "bob"] == list(range(300))  # sender's order
        assert [m.payload for m in got if m.sender == "alice"] == ["from alice"]
        # bob sees his own events too (to reconcile by idempotency key)
        mine = await collect(bob, "room:1", 301)
        keys = {m.idempotency_key for m in mine}
        assert {r.idempotency_key for r in receipts} <= keys


async def test_server_restart_loses_nothing_and_duplicates_nothing(data: Path) -> None:
    async with running_server(data) as first:
        port = first.port
        async with open_realtime(
            url(first), journal_dir=data / "a", token="alice", config=FAST
        ) as alice:
            await alice.subscribe("room:1")
            early = await alice.send_many("room:1", "n", list(range(50)))
            await early[-1].wait()
    # The server is gone; the client reconnects in the background while we keep sending.
    async with open_realtime(
        url(first), journal_dir=data / "a", token="alice", config=FAST
    ) as alice:
        assert alice.state is ConnectionState.RECONNECTING
        offline = await alice.send_many("room:1", "n", list(range(50, 100)))
        assert alice.pending_count == 50
        async with running_server(data, port=port):
            with trio.fail_after(20):
                outcomes = [await r.wait() for r in offline]
            assert outcomes == [Acked(r.seq, False) for r in offline]
            got = await collect(alice, "room:1", 100)
    assert [m.payload for m in got] == list(range(100))
    assert [m.offset for m in got] == list(range(1, 101))


async def send_offline(data: Path, journal: str, payloads: list[int]) -> int:
    """Journal ``payloads`` on room:1 while no server listens; returns the port a server should
    use later (one that was free)."""
    async with running_server(data) as server:
        port = server.port
    assert port is not None
    dead = f"ws://127.0.0.1:{port}/realtime"
    offline = attrs.evolve(FAST, close_grace_period=0)
    async with open_realtime(dead, journal_dir=data / journal, token=journal, config=offline) as c:
        await c.send_many("room:1", "n", payloads)
    return port


async def test_client_restart_retransmits_exactly_once(data: Path) -> None:
    # Journal events while no server runs, close, then reopen with a server: delivered once.
    port = await send_offline(data, "a", list(range(20)))
    async with (
        running_server(data, port=port) as server,
        open_realtime(url(server), journal_dir=data / "a", token="a", config=FAST) as conn,
    ):
        with trio.fail_after(20):
            await conn.drain()
        stored = await server.store.read("room:1", 0, 100)
        assert [e.payload for e in stored] == list(range(20))


async def test_a_journal_copy_resumed_later_is_not_stored_twice(data: Path) -> None:
    # Same client_id, same pending events: the second journal resumes, learns the server has them
    # (ack_seq in resume_response), and drops them instead of publishing them again.
    port = await send_offline(data, "a", [1, 2, 3])
    shutil.copytree(data / "a", data / "copy")
    os.remove(data / "copy" / "LOCK")
    async with running_server(data, port=port) as server:
        for journal in ("a", "copy"):
            async with open_realtime(
                url(server), journal_dir=data / journal, token="a", config=FAST
            ) as conn:
                with trio.fail_after(20):
                    await conn.drain()
        stored = await server.store.read("room:1", 0, 100)
        assert [e.payload for e in stored] == [1, 2, 3]


async def test_a_journal_that_lost_its_tail_renumbers_instead_of_losing_events(
    data: Path,
) -> None:
    """A machine crash can take the last records of a journal the server already stored (sent
    before their fsync under ``batch``/``os``, or while an ``always`` fsync ran). The events
    journaled after it reuse those seqs; taken for retransmissions, they were acked as duplicates
    and lost. They are renumbered instead: every event is stored once, in the order sent."""
    async with running_server(data) as server:
        port = server.port
        for payloads in (["a1", "a2", "a3"], ["b1", "b2"]):
            async with open_realtime(
                url(server), journal_dir=data / "a", token="a", config=FAST
            ) as conn:
                receipts = await conn.send_many("room:1", "n", payloads)
                with trio.fail_after(20):
                    await receipts[-1].wait()
            if payloads[0] == "a1":  # the journal as the crash will leave it: without b1, b2
                shutil.copytree(data / "a", data / "before-crash")
    shutil.rmtree(data / "a")
    shutil.copytree(data / "before-crash", data / "a")
    dead = f"ws://127.0.0.1:{port}/realtime"
    async with open_realtime(dead, journal_dir=data / "a", token="a", config=FAST) as conn:
        offline = await conn.send_many("room:1", "n", ["c1", "c2", "c3"])
        assert [r.seq for r in offline] == [4, 5, 6]  # 4 and 5 are b1 and b2 at the server
        async with running_server(data, port=port) as server:
            with trio.fail_after(20):
                outcomes = [await r.wait() for r in offline]
            assert outcomes == [Acked(seq) for seq in (6, 7, 8)]
            assert [r.seq for r in offline] == [6, 7, 8]
            assert [r.idempotency_key for r in offline] == [
                f"{conn.client_id}:{s}" for s in (6, 7, 8)
            ]
            stored = await server.store.read("room:1", 0, 100)
            assert [e.payload for e in stored] == ["a1", "a2", "a3", "b1", "b2", "c1", "c2", "c3"]
            assert [e.idempotency_key for e in stored[5:]] == [r.idempotency_key for r in offline]
            after = await conn.send("room:1", "n", "d1")
            assert after.seq == 9
            with trio.fail_after(20):
                assert await after.wait() == Acked(9)


async def test_an_event_is_sent_while_its_fsync_runs(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``always`` the server gets (stores and acks) the event while the client's fsync is
    still running; ``send`` returns only once that fsync is done."""
    returned = trio.Event()
    async with (
        running_server(data) as server,
        open_realtime(url(server), journal_dir=data / "a", token="a", config=FAST) as conn,
        trio.open_nursery() as nursery,
    ):

        async def send() -> None:
            await conn.send("room:1", "n", "durable")
            returned.set()

        with held_fsyncs(monkeypatch):
            async with conn.acks() as acks:
                nursery.start_soon(send)
                with trio.fail_after(20):
                    assert await anext(acks) == Acked(1)
            (stored,) = await server.store.read("room:1", 0, 10)
            assert stored.payload == "durable"
            assert not returned.is_set()  # its fsync is still held
        with trio.fail_after(20):
            await returned.wait()
    state = recover(os.fspath(data / "a"))
    assert (state.last_seq, state.ack_seq) == (1, 1)  # journaled, and the ack recorded after it


async def test_the_writer_sends_only_what_the_journal_has_written(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events go out while their fsync runs, but never before their record is written: a crash
    of the process must not leave the server with an event the journal lacks (an application
    that continues from ``last_seq`` after a restart would send it again)."""
    ready = Outbox.ready
    taken: list[int] = []
    early: list[tuple[int, int]] = []  # (seq taken, last seq in the file) when it was not there

    def checked_ready(outbox: Outbox, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        batch = ready(outbox, limit, max_bytes)
        if batch:
            on_disk = recover(os.fspath(data / "a"), repair=False).last_seq
            if batch[-1][0] > on_disk:
                early.append((batch[-1][0], on_disk))
            taken.extend(seq for seq, _ in batch)
        return batch

    monkeypatch.setattr(Outbox, "ready", checked_ready)
    async with (
        running_server(data) as server,
        open_realtime(url(server), journal_dir=data / "a", token="a", config=FAST) as conn,
    ):
        for _ in range(8):  # bursts: in each, the writer and the committer wake together
            async with trio.open_nursery() as nursery:
                for sender in range(50):
                    nursery.start_soon(conn.send_many, "room:1", "n", [sender] * 3)
                    nursery.start_soon(conn.send, "room:1", "n", sender)
    assert sorted(taken) == list(range(1, 1601))
    assert early == []


async def test_a_consumer_is_not_held_behind_the_fsync_of_its_own_send(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processing a message moves the journal's cursor. That move used to wait for the journal's
    batch, and so behind the fsync of any send in flight: a client that sends and reads (a chat)
    read at the pace of its fsyncs (~800 messages/s in benchmarks)."""
    memory = attrs.evolve(FAST, durability="memory")
    async with (
        running_server(data) as server,
        open_realtime(url(server), journal_dir=data / "a", token="a", config=FAST) as alice,
        open_realtime(url(server), token="b", config=memory) as bob,
        trio.open_nursery() as nursery,
    ):
        await alice.subscribe("room:1")
        done = trio.Event()

        async def read() -> None:
            async with alice.messages("room:1") as stream:
                async for message in stream:
                    if message.payload == 49:
                        break
            done.set()

        with held_fsyncs(monkeypatch):
            nursery.start_soon(alice.send, "room:2", "n", "held")  # its fsync is held
            await bob.send_many("room:1", "n", list(range(50)))
            nursery.start_soon(read)
            with trio.fail_after(10):
                await done.wait()


async def test_stream_commit_returns_once_the_position_is_written(data: Path) -> None:
    """Moving to the next message writes the position within MARK_DELAY; ``commit()`` returns
    only once it is written (before a planned shutdown, the docs say)."""

    def written() -> int:
        """The offset of room:1 in the journal's files (0: none yet)."""
        return recover(os.fspath(data / "a"), repair=False).cursors.get("room:1", (0, None))[0]

    async with (
        running_server(data) as server,
        open_realtime(url(server), journal_dir=data / "a", token="a", config=FAST) as conn,
    ):
        await conn.subscribe("room:1")
        await conn.send_many("room:1", "n", [1, 2])
        async with conn.messages("room:1") as stream:
            first = await anext(stream)
            assert written() < first.offset
            await stream.commit()
            assert written() == first.offset


async def test_lost_history_is_reported_as_a_gap(data: Path) -> None:
    async with running_server(data, config=ServerConfig(retention_count=5)) as server:
        async with open_realtime(
            url(server), journal_dir=data / "reader", token="r", config=FAST
        ) as reader:
            await reader.subscribe("room:1")
            async with open_realtime(
                url(server), journal_dir=data / "w", token="w", config=FAST
            ) as writer:
                await (await writer.send("room:1", "n", 0)).wait()
                await collect(reader, "room:1", 1)
                await reader.aclose()
                receipts = await writer.send_many("room:1", "n", list(range(1, 20)))
                await receipts[-1].wait()
        # The reader resumes at offset 1; the server keeps only 16..20.
        async with open_realtime(
            url(server), journal_dir=data / "reader", token="r", config=FAST
        ) as reader:
            with trio.fail_after(20):
                async for item in reader.messages("room:1"):
                    assert isinstance(item, Gap)
                    assert (item.first_missing, item.last_missing) == (2, 20)
                    break


async def test_forbidden_channel_is_rejected_and_does_not_block_the_rest(data: Path) -> None:
    secret = b"k" * 32
    auth = HmacAuthenticator(secret, forbidden={"alice": ("secret:",)})
    async with (
        running_server(data, auth=auth) as server,
        open_realtime(
            url(server), journal_dir=data / "a", token=make_token(secret, "alice"), config=FAST
        ) as conn,
    ):
        bad = await conn.send("secret:1", "x", 1)
        good = await conn.send("room:1", "x", 2)
        assert await bad.wait() == Rejected(1, "forbidden", "may not publish to 'secret:1'")
        assert await good.wait() == Acked(2)


async def test_bad_token_fails_without_a_delegate(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "forged-token-s3cret"
    auth = HmacAuthenticator(b"k" * 32)
    verbose = attrs.evolve(FAST, log_level="DEBUG")
    async with (
        running_server(data, auth=auth) as server,
        open_realtime(url(server), journal_dir=data / "a", token=token, config=verbose) as conn,
    ):
        assert conn.state is ConnectionState.FAILED
        with pytest.raises(ConnectionFailed) as info:
            await conn.send("room:1", "x", 1)
        assert info.value.code == 4001
    # The token appears neither in the error nor in any log record (client, server, websocket),
    # while the refusal itself was logged.
    assert token not in str(info.value)
    assert "4001" in caplog.text
    assert token not in caplog.text


async def test_bad_token_is_refreshed_through_the_delegate(data: Path) -> None:
    secret = b"k" * 32
    calls: list[str] = []

    class Delegate:
        async def get_token(self) -> str:
            calls.append("get")
            return "expired-or-forged"

        async def refresh_token(self) -> str:
            calls.append("refresh")
            return make_token(secret, "alice")

    async with (
        running_server(data, auth=HmacAuthenticator(secret)) as server,
        open_realtime(url(server), journal_dir=data / "a", auth=Delegate(), config=FAST) as conn,
    ):
        with trio.fail_after(20):
            async for state in conn.states():
                if state is ConnectionState.CONNECTED:
                    break
        # Asked for the token, refused; asked again (a shared delegate may have a new one by
        # now), still the refused one, so refreshed: once.
        assert calls == ["get", "get", "refresh"]
        assert await (await conn.send("room:1", "x", 1)).wait() == Acked(1)


async def test_missed_events_are_replayed_on_resume(data: Path) -> None:
    async with running_server(data) as server:
        async with open_realtime(
            url(server), journal_dir=data / "r", token="r", config=FAST
        ) as reader:
            await reader.subscribe("room:1")
        # The reader is gone (its position is in its journal) while ten events are published.
        async with open_realtime(
            url(server), journal_dir=data / "w", token="w", config=FAST
        ) as writer:
            await writer.send_many("room:1", "n", list(range(10)))
            await writer.drain()
            assert writer.metrics.total_messages_acked == 10
        async with open_realtime(
            url(server), journal_dir=data / "r", token="r", config=FAST
        ) as reader:
            got = await collect(
                reader, "room:1", 10
            )  # no subscribe() call: restored from the journal
            assert [m.payload for m in got] == list(range(10))
            later = await collect_after(reader, writer_dir=data / "w", server=server)
            assert later == [11]


async def collect_after(reader: object, *, writer_dir: Path, server: object) -> list[int]:
    async with open_realtime(url(server), journal_dir=writer_dir, token="w", config=FAST) as writer:  # type: ignore[arg-type]
        await writer.send("room:1", "n", 10)
        got = await collect(reader, "room:1", 1)
    return [m.offset for m in got]


async def test_leaving_the_block_drains_pending_events(data: Path) -> None:
    async with running_server(data) as server:
        async with open_realtime(
            url(server), journal_dir=data / "a", token="a", config=FAST
        ) as conn:
            receipts = await conn.send_many("room:1", "n", list(range(100)))
        # The block waited for the acks (close_grace_period) before closing.
        assert all(isinstance(r.outcome, Acked) for r in receipts)
        assert conn.state is ConnectionState.CLOSED
        assert len(await server.store.read("room:1", 0, 1000)) == 100


async def test_an_event_being_processed_when_the_reader_dies_is_delivered_again(
    data: Path,
) -> None:
    async with running_server(data) as server:
        async with open_realtime(url(server), journal_dir=data / "w", token="w", config=FAST) as w:
            await w.send_many("room:1", "n", list(range(10)))
            await w.drain()
        async with open_realtime(url(server), journal_dir=data / "r", token="r", config=FAST) as r:
            await r.subscribe("room:1")  # from the head (offset 10): nothing replayed
        async with open_realtime(url(server), journal_dir=data / "w", token="w", config=FAST) as w:
            await w.send_many("room:1", "n", list(range(10, 20)))
            await w.drain()
        taken: list[int] = []
        with trio.CancelScope() as scope:  # the reader "dies": cancelled while handling an event
            async with open_realtime(
                url(server), journal_dir=data / "r", token="r", config=FAST
            ) as reader:
                async for item in reader.messages("room:1"):
                    assert isinstance(item, Message)
                    taken.append(item.payload)
                    if item.payload == 12:
                        # All 20 have arrived by now; a reconnect resumes after the last arrived,
                        # which must not count as processed.
                        states = reader.states()
                        for session in [s for s in server.sessions if s.user == "r"]:
                            session.close(1001, "going away")
                            session.scope.cancel()
                        with trio.fail_after(10):
                            seen = [await states.__anext__() for _ in range(3)]
                        assert seen[1:] == [ConnectionState.RECONNECTING, ConnectionState.CONNECTED]
                    if item.payload == 14:  # dies while handling 14: 10..13 are processed
                        scope.cancel()
                        await trio.lowlevel.checkpoint()
        assert taken == [10, 11, 12, 13, 14]
        async with open_realtime(
            url(server), journal_dir=data / "r", token="r", config=FAST
        ) as reader:
            again = await collect(reader, "room:1", 6)
        assert [m.payload for m in again] == [14, 15, 16, 17, 18, 19]  # 14 again, none lost


async def test_a_link_dropped_while_a_full_reader_waits_loses_and_repeats_nothing(
    data: Path,
) -> None:
    """The reader task hands each event to ``messages()``; when the application is behind, the
    hand-over waits for room, the heartbeat goes unanswered and the link is dropped. The event
    whose hand-over was cut short must be asked for again, not resumed after (it was lost)."""
    config = attrs.evolve(FAST, heartbeat_interval=0.1, heartbeat_timeout=0.3)
    async with running_server(data) as server:
        async with open_realtime(
            url(server), journal_dir=data / "r", token="r", config=config
        ) as r:
            stream = r.messages("room:1")
            await r.subscribe("room:1")
            states = r.states()
            async with open_realtime(
                url(server), journal_dir=data / "w", token="w", config=FAST
            ) as w:
                await w.send_many("room:1", "n", list(range(1500)))  # more than the stream holds
                await w.drain()
                with trio.fail_after(10):
                    seen = [await states.__anext__() for _ in range(3)]
                assert seen == [
                    ConnectionState.CONNECTED,
                    ConnectionState.RECONNECTING,  # the heartbeat timed out
                    ConnectionState.CONNECTED,
                ]
                await w.send_many("room:1", "n", list(range(1500, 1600)))
                await w.drain()
            got: list[int] = []
            with trio.fail_after(10):
                async for item in stream:
                    assert isinstance(item, Message)
                    got.append(item.payload)
                    if item.payload == 1599:
                        break
        assert got == list(range(1600))


async def _journal_in_small_segments(directory: Path, count: int) -> None:
    """Journal ``count`` events on room:1 in 4 KiB segments, as a long time offline leaves it:
    every segment but the last sealed."""
    from trio_realtime._config import OutboxFullPolicy
    from trio_realtime._journal import open_journal
    from trio_realtime._outbox import Outbox

    async with open_journal(directory, segment_bytes=4096) as journal:
        outbox = Outbox(
            journal, max_messages=10_000, max_bytes=1 << 30, full_policy=OutboxFullPolicy.RAISE
        )
        await outbox.send_many("room:1", "n", list(range(count)))
    assert len([n for n in os.listdir(directory) if n.startswith("segment-")]) > 3


async def test_events_in_sealed_segments_are_replayed_in_order_once(data: Path) -> None:
    await _journal_in_small_segments(data / "a", 300)
    async with (
        running_server(data) as server,
        open_realtime(url(server), journal_dir=data / "a", token="a", config=FAST) as conn,
    ):
        assert conn.pending_count == 300
        with trio.fail_after(20):
            await conn.drain()
        stored = await server.store.read("room:1", 0, 1000)
        assert [e.payload for e in stored] == list(range(300))
        assert conn.metrics.replayed == 300


async def test_a_journal_that_cannot_be_read_back_fails_the_connection(data: Path) -> None:
    """A sealed segment damaged after the journal was opened: the connection fails with the
    reason, and sends nothing of that segment."""
    await _journal_in_small_segments(data / "a", 300)
    async with running_server(data) as server:
        port = server.port
    dead = f"ws://127.0.0.1:{port}/realtime"
    async with open_realtime(dead, journal_dir=data / "a", token="a", config=FAST) as conn:
        first = min(n for n in os.listdir(data / "a") if n.startswith("segment-"))
        with open(data / "a" / first, "r+b") as f:
            f.seek(100)
            f.write(b"\xff")
        async with running_server(data, port=port) as server:
            with trio.fail_after(20), pytest.raises(ConnectionFailed, match="cannot be read back"):
                await conn.drain()
            assert conn.state is ConnectionState.FAILED
            assert await server.store.read("room:1", 0, 1000) == []
