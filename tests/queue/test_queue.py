"""PersistentQueue and QueueProducer: payloads, acks, redelivery, clear_all, GC, damage, wake-ups,
stale endpoints, one consumer at a time."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

import attrs
import pytest
import trio

from trio_realtime import JournalCorrupt, JournalLocked
from trio_realtime._journal import SEGMENT_HEADER, list_segments
from trio_realtime.queue import QueueItem, QueueProducer, open_queue
from trio_realtime.queue._common import runtime_socket


@attrs.define
class Order:
    item: str
    quantity: int


@attrs.define
class Unregistered:
    x: int


async def take(queue: object, count: int) -> list[QueueItem]:
    items: list[QueueItem] = []
    with trio.fail_after(10):
        async for item in queue:  # type: ignore[attr-defined]
            items.append(item)
            if len(items) == count:
                break
    return items


async def test_payloads_round_trip_typed(tmp_path: Path) -> None:
    with QueueProducer("q", directory=tmp_path) as producer:
        producer.send({"a": [1, 2.5, None, "x"]})
        producer.send(b"\x00\xffraw")
        producer.send(Order("tea", 2))
        producer.send(Unregistered(7))
        with pytest.raises(TypeError, match="JSON-able"):
            producer.send(object())
        assert producer.last_seq == 4  # the refused one took no seq
    async with open_queue("q", directory=tmp_path, types=[Order]) as queue:
        items = await take(queue, 4)
    assert [i.payload for i in items] == [
        {"a": [1, 2.5, None, "x"]},
        b"\x00\xffraw",
        Order("tea", 2),
        {"x": 7},
    ]
    assert items[3].as_type(Unregistered) == Unregistered(7)
    assert items[2].type_name == f"{__name__}.Order"
    assert [i.seq for i in items] == [1, 2, 3, 4]
    assert len({i.producer_id for i in items}) == 1
    assert all(i.enqueued_at > 0 for i in items)


def test_bad_names_are_refused(tmp_path: Path) -> None:
    for name in ("", "a/b", "..", "x" * 65, "sp ace"):
        with pytest.raises(ValueError, match="queue name"):
            QueueProducer(name, directory=tmp_path)


async def test_unacked_items_come_back_after_a_restart_acked_ones_never(tmp_path: Path) -> None:
    with QueueProducer("q", directory=tmp_path) as producer:
        for n in range(6):
            producer.send(n)
    async with open_queue("q", directory=tmp_path) as queue:
        assert queue.pending_count == 6
        items = await take(queue, 6)
        for item in items[:2] + items[4:5]:  # acks out of order are fine
            await item.ack()
        assert queue.pending_count == 3
    async with open_queue("q", directory=tmp_path) as queue:
        assert queue.pending_count == 3
        again = await take(queue, 3)
    assert [i.payload for i in again] == [2, 3, 5]


async def test_visibility_timeout_hands_an_unacked_item_out_again(tmp_path: Path) -> None:
    with QueueProducer("q", directory=tmp_path) as producer:
        producer.send("slow")
    async with open_queue("q", directory=tmp_path, visibility_timeout=0.2) as queue:
        first = await queue.get()
        with trio.fail_after(5):
            second = await queue.get()  # not acked in time: handed out again
        assert (second.producer_id, second.seq) == (first.producer_id, first.seq)
        await second.ack()
        assert queue.pending_count == 0


async def test_clear_all_acknowledges_everything(tmp_path: Path) -> None:
    with QueueProducer("q", directory=tmp_path) as producer:
        for n in range(10):
            producer.send(n)
    async with open_queue("q", directory=tmp_path) as queue:
        await take(queue, 3)
        assert await queue.clear_all() == 10
        assert queue.pending_count == 0
    async with open_queue("q", directory=tmp_path) as queue:
        assert queue.pending_count == 0
    assert os.listdir(tmp_path / "producers") == []  # gone and fully acked: collected
    # The ack log was compacted at the last open: nothing is left to remember.
    assert (tmp_path / "acks.log").read_bytes() == SEGMENT_HEADER


def disk_use(directory: str) -> int:
    total = 0
    for _, path in list_segments(directory):
        with contextlib.suppress(FileNotFoundError):  # the consumer may delete it meanwhile
            total += os.path.getsize(path)
    return total


async def test_acked_segments_are_deleted_so_disk_use_stays_bounded(tmp_path: Path) -> None:
    """20,000 items of 1 KB (20 MB) through 64 KB segments, acked 200 at a time: the producer's
    directory never holds much more than the unacked items and the segment being written."""
    producer = QueueProducer("q", directory=tmp_path, sync=False, segment_bytes=64 * 1024)
    own = tmp_path / "producers" / producer.producer_id
    most = 0
    # Acked segments are deleted at most once per poll_interval.
    async with open_queue("q", directory=tmp_path, poll_interval=0.05) as queue:
        for batch in range(100):
            for _ in range(200):
                producer.send({"pad": "x" * 1000, "batch": batch})
            await queue.ack_many(await take(queue, 200))
            most = max(most, disk_use(str(own)))
        producer.close()
        await queue.clear_all()
    assert most < 1024 * 1024  # of 20 MB sent
    assert not own.exists()


async def test_a_torn_tail_of_a_crashed_producer_is_ignored_damage_inside_is_refused(
    tmp_path: Path,
) -> None:
    with QueueProducer("q", directory=tmp_path) as producer:
        for n in range(10):
            producer.send(n)
        own = tmp_path / "producers" / producer.producer_id
    ((_, segment),) = list_segments(str(own))
    size = os.path.getsize(segment)
    os.truncate(segment, size - 3)  # the last item's write was cut short by a crash
    async with open_queue("q", directory=tmp_path) as queue:
        items = await take(queue, 9)
        assert [i.payload for i in items] == list(range(9))
        for item in items:
            await item.ack()
    assert not own.exists()  # the producer is gone, all it finished sending is acked

    with QueueProducer("q", directory=tmp_path) as producer:
        for n in range(10):
            producer.send(n)
        own = tmp_path / "producers" / producer.producer_id
    ((_, segment),) = list_segments(str(own))
    data = bytearray(Path(segment).read_bytes())
    data[len(data) // 2] ^= 0x40  # a bit flip with intact records after it
    Path(segment).write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt):
        async with open_queue("q", directory=tmp_path):
            pass


async def test_a_send_wakes_the_consumer_without_waiting_for_a_poll(tmp_path: Path) -> None:
    async with open_queue("q", directory=tmp_path, poll_interval=3600) as queue:
        with QueueProducer("q", directory=tmp_path) as producer:
            await producer.asend("from trio")
            thread = threading.Thread(target=producer.send, args=("from a thread",))
            thread.start()
            got = [i.payload for i in await take(queue, 2)]  # fails after 10 s, not 3600
            thread.join()
    assert sorted(got) == ["from a thread", "from trio"]


async def test_a_stale_endpoint_is_detected_and_replaced(tmp_path: Path) -> None:
    endpoint = runtime_socket(str(tmp_path))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(endpoint)  # a consumer that crashed: its socket file stays, nobody reads it
    dead.close()
    with QueueProducer("q", directory=tmp_path) as producer:
        producer.send("while the consumer is dead")  # no error: it is simply not woken
        async with open_queue("q", directory=tmp_path, poll_interval=3600) as queue:
            assert [i.payload for i in await take(queue, 1)] == ["while the consumer is dead"]
            await producer.asend("woken")
            assert [i.payload for i in await take(queue, 1)] == ["woken"]
    assert not os.path.exists(endpoint)


async def test_one_consumer_at_a_time(tmp_path: Path) -> None:
    async with open_queue("q", directory=tmp_path):
        with pytest.raises(JournalLocked):
            async with open_queue("q", directory=tmp_path):
                pass


async def test_cli_inspect_lists_pending_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trio_realtime._cli import main

    with QueueProducer("q", directory=tmp_path) as producer:
        producer.send({"job": 1})
        producer.send(b"\x01\x02")
        producer.send(Order("tea", 2))
    async with open_queue("q", directory=tmp_path) as queue:
        await (await queue.get()).ack()
    assert main(["queue", "inspect", "q", "--directory", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pending:    2" in out
    assert "(gone) pending=2" in out
    assert "#2" in out
    assert "bytes 0102" in out
    assert f"{__name__}.Order" in out
    assert "#1 " not in out  # acked
    assert main(["queue", "inspect", "nothing-here", "--directory", str(tmp_path / "x")]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["queue", "inspect", "bad/name"])
    assert exc.value.code == 2
