"""Queues written by earlier versions still open: the bytes of producer journals and acks.log,
and the default location (which moved from trio_realtime/queues to trio-realtime/queues)."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import orjson
import pytest
import trio
from crc32c import crc32c

from trio_realtime._paths import data_dir, safe_name
from trio_realtime.queue import QueueProducer, open_queue, queue_directory

HEADER = b"TRTJ\x01\x00\x00\x00"


def framed(body: bytes) -> bytes:
    return struct.pack("<II", len(body), crc32c(body)) + body


def old_queue(directory: Path, producer: str) -> None:
    """A queue as an earlier version left it: items 1-5 sent (3 as bytes), 1, 2 and 4 acked."""
    own = directory / "producers" / producer
    own.mkdir(parents=True)
    segment = HEADER + framed(b"\x04" + struct.pack("<QQ", 0, 0) + b"{}")  # checkpoint
    for seq in range(1, 6):
        if seq == 3:
            item = struct.pack("<Bd", 2, 1.5e9) + b"\x00\xff"  # kind 2: bytes
        else:
            item = struct.pack("<Bd", 1, 1.5e9) + orjson.dumps({"n": seq})  # kind 1: JSON
        segment += framed(b"\x01" + struct.pack("<Q", seq) + item)  # append
    (own / "segment-000000000001.log").write_bytes(segment)
    (directory / "acks.log").write_bytes(
        HEADER
        + framed(b'\x03{"channel":"%s","offset":2,"epoch":"w"}' % producer.encode())
        + framed(b'\x03{"channel":"%s","offset":4,"epoch":null}' % producer.encode())
    )


async def test_a_queue_written_by_an_earlier_version_opens(tmp_path: Path) -> None:
    old_queue(tmp_path, "p")
    async with open_queue("q", directory=tmp_path) as queue:
        assert queue.pending_count == 2
        with trio.fail_after(10):
            items = [await queue.get(), await queue.get()]
        assert [(i.producer_id, i.seq, i.payload) for i in items] == [
            ("p", 3, b"\x00\xff"),
            ("p", 5, {"n": 5}),
        ]
        await queue.ack_many(items)
    async with open_queue("q", directory=tmp_path) as queue:
        assert queue.pending_count == 0


def test_the_default_directory_and_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", os.fspath(tmp_path))
    new = tmp_path / "trio-realtime" / "queues" / "jobs"
    old = tmp_path / "trio_realtime" / "queues" / "jobs"
    assert queue_directory("jobs") == os.fspath(new) == data_dir("queues", "jobs")
    assert queue_directory("jobs", tmp_path / "x") == os.fspath(tmp_path / "x")
    old.mkdir(parents=True)  # an earlier version's queue: kept where it is
    assert queue_directory("jobs") == os.fspath(old)
    assert queue_directory("other") == os.fspath(tmp_path / "trio-realtime" / "queues" / "other")
    new.mkdir(parents=True)  # both: the new place wins
    assert queue_directory("jobs") == os.fspath(new)
    monkeypatch.setenv("XDG_DATA_HOME", "")
    home = os.path.expanduser("~")
    assert data_dir() == os.path.join(home, ".local", "share", "trio-realtime")


async def test_items_in_the_old_default_directory_are_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", os.fspath(tmp_path))
    old_queue(tmp_path / "trio_realtime" / "queues" / "jobs", "p")
    with QueueProducer("jobs") as producer:  # a new producer joins the old queue
        producer.send("new")
    async with open_queue("jobs") as queue:
        assert queue.pending_count == 3
    assert not (tmp_path / "trio-realtime").exists()


def test_data_dir_refuses_parts_that_are_not_one_component() -> None:
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError, match="single path component"):
            data_dir("queues", bad)


def old_journal_name(url: str) -> str:
    """How the connection named its default journal directory before _paths existed."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[-1]).strip("_") or "default"


@pytest.mark.parametrize(
    "text",
    [
        "ws://127.0.0.1:8765/realtime",
        "wss://example.com/realtime?x=1#y",
        "ws://[::1]:80/",
        "wss://user@host/päth",
        "alice",
        "Bob Smith",
        "",
        "ws://",
    ],
)
def test_safe_name_keeps_the_names_used_so_far(text: str) -> None:
    assert safe_name(text) == old_journal_name(text)


def test_safe_name_is_always_one_safe_component() -> None:
    assert safe_name("ws://..") == safe_name(".") == "default"
    assert safe_name("../../etc/passwd") == ".._.._etc_passwd"
    long = safe_name("ws://host/" + "x" * 1000)
    assert len(long) == 255
    assert long != safe_name("ws://host/" + "x" * 999)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", long)


def test_the_default_journal_directory_has_not_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trio_realtime._paths import default_journal_dir

    monkeypatch.setenv("XDG_DATA_HOME", os.fspath(tmp_path))
    url = "ws://127.0.0.1:8765/realtime"
    assert default_journal_dir(url) == os.path.join(
        tmp_path, "trio-realtime", "journals", old_journal_name(url)
    )
