"""The pure record format: encode/decode round trips and scanning."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_realtime._journal._format import (
    HEADER,
    AckMark,
    Append,
    Checkpoint,
    CursorMark,
    Record,
    ScanResult,
    encode_record,
    encode_records,
    scan,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
name = st.text(min_size=1, max_size=10)
records = st.one_of(
    st.builds(Append, seq=u64, data=st.binary(max_size=50)),
    st.builds(AckMark, ack_seq=u64),
    st.builds(
        CursorMark,
        channel=name,
        offset=st.none() | st.integers(0, 2**62),
        epoch=st.none() | name,
    ),
    st.builds(
        Checkpoint,
        last_seq=u64,
        ack_seq=u64,
        cursors=st.dictionaries(
            name, st.tuples(st.integers(0, 2**62), st.none() | name), max_size=3
        ),
    ),
)


@given(st.lists(records, max_size=10))
def test_records_round_trip(items: list[Record]) -> None:
    result = scan(HEADER + encode_records(items))
    assert result.damage is None
    assert result.records == items
    assert result.end == len(HEADER) + sum(len(encode_record(r)) for r in items)


def test_record_layout() -> None:
    data = encode_record(AckMark(7))
    length = int.from_bytes(data[:4], "little")
    assert length == len(data) - 8 == 9
    assert data[8] == 2  # kind ACK
    assert int.from_bytes(data[9:], "little") == 7


def test_empty_and_torn_headers() -> None:
    assert scan(b"") == ScanResult([], 0, None)
    for cut in range(1, len(HEADER)):
        damage = scan(HEADER[:cut]).damage
        assert damage is not None
        assert not damage.valid_after  # a torn creation, not corruption
    damage = scan(b"XXXX" + HEADER[4:] + encode_record(AckMark(1))).damage
    assert damage is not None
    assert damage.valid_after


def test_crc_valid_but_unknown_kind_is_corruption() -> None:
    from crc32c import crc32c

    body = b"\x63whatever"
    weird = len(body).to_bytes(4, "little") + crc32c(body).to_bytes(4, "little") + body
    result = scan(HEADER + encode_record(AckMark(1)) + weird)
    assert result.records == [AckMark(1)]
    assert result.damage is not None
    assert result.damage.valid_after
