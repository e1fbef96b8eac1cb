"""The segment-log API that trio_realtime._journal exports for other local logs (the queue): its
names, and the bytes of ack logs, which must stay readable by and from earlier versions."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from crc32c import crc32c
from hypothesis import given
from hypothesis import strategies as st

import trio_realtime._journal as journal_api
from trio_realtime import JournalCorrupt, JournalLocked
from trio_realtime._journal import (
    SEGMENT_HEADER,
    AckLogRecord,
    Append,
    Checkpoint,
    StreamAck,
    StreamForgotten,
    StreamWatermark,
    acquire_lock,
    create_segment_log,
    encode_ack_record,
    encode_append,
    is_lock_held,
    list_segments,
    read_ack_log,
    release_lock,
    scan_segment,
    write_ack_log,
)

SEGMENT_LOG_API = {
    "SEGMENT_HEADER",
    "AckLogRecord",
    "Damage",
    "ScanResult",
    "SegmentWriter",
    "StreamAck",
    "StreamForgotten",
    "StreamWatermark",
    "acquire_lock",
    "create_segment_log",
    "encode_ack_record",
    "encode_append",
    "fsync_dir",
    "is_lock_held",
    "list_segments",
    "read_ack_log",
    "release_lock",
    "scan_segment",
    "write_ack_log",
}


def framed(body: bytes) -> bytes:
    """A record as written by every version so far: u32 length, u32 CRC-32C, body."""
    return struct.pack("<II", len(body), crc32c(body)) + body


def cursor(json: bytes) -> bytes:
    return framed(b"\x03" + json)  # kind 3: CURSOR


def test_the_segment_log_api_is_exported() -> None:
    assert set(journal_api.__all__) >= SEGMENT_LOG_API
    for name in journal_api.__all__:
        assert hasattr(journal_api, name), name
    assert SEGMENT_HEADER == b"TRTJ\x01\x00\x00\x00"


def test_ack_records_keep_their_bytes() -> None:
    assert encode_ack_record(StreamAck("p1", 3)) == cursor(
        b'{"channel":"p1","offset":3,"epoch":null}'
    )
    assert encode_ack_record(StreamWatermark("p1", 7)) == cursor(
        b'{"channel":"p1","offset":7,"epoch":"w"}'
    )
    assert encode_ack_record(StreamForgotten("p1")) == cursor(
        b'{"channel":"p1","offset":null,"epoch":null}'
    )


def test_an_ack_log_written_by_an_earlier_version_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "acks.log"
    path.write_bytes(
        SEGMENT_HEADER
        + cursor(b'{"channel":"a","offset":4,"epoch":"w"}')
        + cursor(b'{"channel":"a","offset":6,"epoch":null}')
        + cursor(b'{"channel":"b","offset":1,"epoch":null}')
        + cursor(b'{"channel":"b","offset":null,"epoch":null}')
        + cursor(b'{"channel":"c","offset":null,"epoch":"w"}')  # forgotten, whatever the epoch
        + cursor(b'{"channel":"d","offset":2,"epoch":"x"}')  # any other epoch: one ack
        + framed(b"\x01" + struct.pack("<Q", 9) + b"{}")  # not an ack record: skipped
        + cursor(b'{"channel":"a","offset":9,"epoch":null}')[:-5]  # a torn tail
    )
    assert read_ack_log(os.fspath(path)) == [
        StreamWatermark("a", 4),
        StreamAck("a", 6),
        StreamAck("b", 1),
        StreamForgotten("b"),
        StreamForgotten("c"),
        StreamAck("d", 2),
    ]


ack_records = st.one_of(
    st.builds(StreamAck, stream=st.text(min_size=1, max_size=20), seq=st.integers(0, 2**62)),
    st.builds(StreamWatermark, stream=st.text(min_size=1, max_size=20), seq=st.integers(0, 2**62)),
    st.builds(StreamForgotten, stream=st.text(min_size=1, max_size=20)),
)


@given(st.lists(ack_records, max_size=10))
def test_ack_logs_round_trip(
    tmp_path_factory: pytest.TempPathFactory, records: list[AckLogRecord]
) -> None:
    path = os.fspath(tmp_path_factory.mktemp("acks") / "acks.log")
    write_ack_log(path, records)
    assert read_ack_log(path) == records
    with open(path, "ab") as f:
        f.write(b"".join(encode_ack_record(record) for record in records))
    assert read_ack_log(path) == records + records


def test_an_ack_log_damaged_inside_is_refused(tmp_path: Path) -> None:
    path = os.fspath(tmp_path / "acks.log")
    assert read_ack_log(path) == []  # none yet
    write_ack_log(path, [StreamWatermark("a", 1), StreamAck("a", 3), StreamAck("a", 4)])
    data = bytearray(Path(path).read_bytes())
    data[len(SEGMENT_HEADER) + 12] ^= 0x01  # the first record; intact ones follow
    Path(path).write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt):
        read_ack_log(path)


def test_a_segment_log_written_and_read_back(tmp_path: Path) -> None:
    directory = os.fspath(tmp_path / "log")
    assert not is_lock_held(directory)
    lock = acquire_lock(directory)
    try:
        assert is_lock_held(directory)
        with pytest.raises(JournalLocked):
            acquire_lock(directory)
        writer = create_segment_log(directory, segment_bytes=4096, sync=False)
        try:
            for seq in range(1, 201):
                writer.write([(seq, encode_append(seq, b"x" * 40))])
            writer.sync()
        finally:
            writer.close()
    finally:
        release_lock(lock)
    assert not is_lock_held(directory)
    segments = list_segments(directory)
    assert len(segments) > 1
    assert [index for index, _ in segments] == list(range(1, len(segments) + 1))
    appends: list[Append] = []
    for _, path in segments:
        result = scan_segment(Path(path).read_bytes())
        assert result.damage is None
        assert isinstance(result.records[0], Checkpoint)
        appends += [r for r in result.records if isinstance(r, Append)]
    assert appends == [Append(seq, b"x" * 40) for seq in range(1, 201)]
