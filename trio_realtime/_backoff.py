"""Reconnection delays: exponential backoff with jitter, as a pure object (no clock, no sleeping)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays between reconnection attempts.

    The first retry after a connection was lost is immediate (delay 0): most drops are brief. Then the
    ceiling doubles from ``initial`` up to ``maximum``, and each delay is drawn uniformly from
    ``[ceiling * (1 - jitter), ceiling]`` (``jitter=1``: "full jitter", uniform in ``[0, ceiling]``),
    which spreads reconnecting clients out instead of having them stampede a restarting server.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        jitter: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempt = 0
        """Consecutive failed attempts since the last success."""

    def reset(self) -> None:
        """A connection succeeded: the next drop retries immediately again."""
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before retry number ``attempt`` (0-based)."""
        if attempt == 0:
            return 0.0
        return min(self.maximum, self.initial * 2.0 ** min(attempt - 1, 62))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        ceiling = self.ceiling(self.attempt)
        self.attempt += 1
        return ceiling * (1.0 - self.jitter * self._rng.random())

    def at_least(self, delay: float) -> float:
        """The next delay, but no shorter than ``delay`` (after a 4029 "rate limited" close)."""
        return max(delay, self.next_delay())
