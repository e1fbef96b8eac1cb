"""The unacknowledged appends a journal holds when it is opened, read back a segment at a time.

After a long time offline a journal can hold millions of pending events. Opening it reads only what it
must: the active segment, and a checkpoint and a seal (one CRC over the file) for every older one. The
appends of a sealed segment are read when the connection is about to send them, and let go once they
are all acknowledged, so they are neither a cost at start-up nor held in memory all at once.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence

from .._errors import JournalCorrupt, JournalError
from ._format import Append, scan, sealed_frames

__all__ = ["Backlog", "BacklogPart", "Frames"]


class Frames:
    """The frames of consecutive seqs as slices of one buffer: no object per frame until one is
    asked for."""

    __slots__ = ("data", "ends", "starts")

    def __init__(self, data: bytes, starts: list[int], ends: list[int]) -> None:
        self.data = data
        self.starts = starts
        self.ends = ends

    @classmethod
    def of(cls, frames: Sequence[bytes]) -> Frames:
        starts, ends, position = [], [], 0
        for frame in frames:
            starts.append(position)
            position += len(frame)
            ends.append(position)
        return cls(b"".join(frames), starts, ends)

    def __len__(self) -> int:
        return len(self.starts)

    def frame(self, index: int) -> bytes:
        return self.data[self.starts[index] : self.ends[index]]

    def size(self, start: int, stop: int) -> int:
        """The bytes of frames ``[start, stop)``."""
        return sum(self.ends[start:stop]) - sum(self.starts[start:stop])


class BacklogPart:
    """Consecutive pending seqs ``[first, end)``: either read already (``frames``), or still in the
    sealed segment at ``path``."""

    __slots__ = ("end", "first", "frames", "path")

    def __init__(
        self, first: int, end: int, *, path: str | None = None, frames: Frames | None = None
    ) -> None:
        if (path is None) == (frames is None):
            raise ValueError("a backlog part has either a path or its frames")
        self.first = first
        self.end = end
        self.path = path
        self.frames = frames
        """``frames.frame(seq - first)`` is the frame of ``seq``; ``None`` until read."""

    def read(self) -> Frames:
        """Read this part's frames from its segment (blocking: call it from a worker thread).

        Raises:
            JournalCorrupt: the segment is damaged, or does not hold the seqs it should.
            JournalError: the segment cannot be read.
        """
        assert self.path is not None
        path = self.path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise JournalError(f"cannot read journal segment {path!r}: {exc}") from exc
        found = sealed_frames(data)
        if found is None:  # changed since the journal was opened: say where
            result = scan(data)
            offset, reason = (
                (result.damage.offset, result.damage.reason)
                if result.damage is not None
                else (len(data), "the segment's seal is missing or does not match")
            )
            raise JournalCorrupt(path, offset, reason)
        seqs, starts, ends = found
        wanted = self.end - self.first
        if len(seqs) != wanted or not seqs or seqs[0] != self.first or seqs[-1] != self.end - 1:
            raise JournalCorrupt(
                path, 0, f"expected seqs {self.first}..{self.end - 1}, found {len(seqs)} appends"
            )
        return Frames(data, starts, ends)


class Backlog(Sequence[Append]):
    """The pending appends, seqs ``[low, end)`` without gaps, in parts of one segment each.

    The connection's outbox asks :meth:`get` for the frame of a seq, reads a part that is not in
    memory yet with :meth:`BacklogPart.read` in a worker thread and hands it to :meth:`install`, and
    moves ``low`` up with :meth:`acknowledge`, which lets go of the parts left behind. As a sequence
    (for tests and tools) it reads parts on demand, blocking.
    """

    def __init__(self, parts: list[BacklogPart], *, low: int) -> None:
        for before, after in itertools.pairwise(parts):
            if before.end != after.first:
                raise ValueError("backlog parts must hold consecutive seqs")
        if parts and not parts[0].first <= low < parts[0].end:
            raise ValueError("the first pending seq must lie in the first part")
        self.low = low
        """The first seq not acknowledged."""
        self.end = parts[-1].end if parts else low
        """One past the last seq."""
        self._parts = parts
        self._starts = [part.first for part in parts]
        self.loaded_bytes = 0
        """Bytes of the pending frames that are in memory."""
        self.loaded_count = 0
        """How many pending frames are in memory."""
        for part in parts:
            if part.frames is not None:
                self._count(part, max(low, part.first), part.end, 1)

    def _count(self, part: BacklogPart, start: int, stop: int, sign: int) -> None:
        assert part.frames is not None
        self.loaded_bytes += sign * part.frames.size(start - part.first, stop - part.first)
        self.loaded_count += sign * (stop - start)

    def part(self, seq: int) -> BacklogPart:
        """The part holding ``seq`` (which must lie in ``[low, end)``)."""
        return self._parts[bisect.bisect_right(self._starts, seq) - 1]

    def is_loaded(self, seq: int) -> bool:
        """Whether the frame of ``seq`` (in ``[low, end)``) is in memory."""
        return self.part(seq).frames is not None

    def get(self, seq: int) -> bytes | None:
        """The frame of ``seq`` (in ``[low, end)``), or ``None`` if its part is not in memory."""
        part = self.part(seq)
        if part.frames is None:
            return None
        return part.frames.frame(seq - part.first)

    def install(self, part: BacklogPart, frames: Frames) -> None:
        """Keep the frames :meth:`BacklogPart.read` returned for ``part`` (unless the part was
        acknowledged or read meanwhile)."""
        if part.frames is None and part in self._parts:
            part.frames = frames
            self._count(part, max(self.low, part.first), part.end, 1)

    def acknowledge(self, stop: int) -> None:
        """Every seq below ``stop`` is acknowledged: move ``low`` up to it and let go of the parts
        left wholly behind."""
        stop = min(stop, self.end)
        if stop <= self.low:
            return
        for part in self._parts:
            if part.first >= stop:
                break
            if part.frames is not None:
                self._count(part, max(self.low, part.first), min(stop, part.end), -1)
        self.low = stop
        while self._parts and self._parts[0].end <= stop:
            self._parts.pop(0)
            self._starts.pop(0)

    # --- as a sequence ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.end - self.low

    def __iter__(self) -> Iterator[Append]:
        for part in list(self._parts):
            frames = part.frames if part.frames is not None else part.read()
            for seq in range(max(self.low, part.first), part.end):
                yield Append(seq, frames.frame(seq - part.first))

    def __getitem__(self, index: int) -> Append:  # type: ignore[override]
        if not isinstance(index, int):
            raise TypeError("a backlog is indexed by position only")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        seq = self.low + index
        part = self.part(seq)
        frames = part.frames if part.frames is not None else part.read()
        return Append(seq, frames.frame(seq - part.first))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]
