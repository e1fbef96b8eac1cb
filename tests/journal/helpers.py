"""Shared helpers for journal tests."""

from __future__ import annotations

import os

from trio_realtime._journal import Journal


def frame(seq: int) -> bytes:
    """A stand-in for an upstream event's wire bytes, recognisable by seq."""
    return b'{"type":"event","seq":%d,"payload":"%s"}' % (seq, b"x" * (seq % 7))


async def append_n(journal: Journal, count: int) -> list[int]:
    seqs = []
    for _ in range(count):
        seq = journal.next_seq
        await journal.append(seq, frame(seq))
        seqs.append(seq)
    return seqs


def segments(directory: str) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("segment-"))
