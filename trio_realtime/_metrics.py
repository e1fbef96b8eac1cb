"""A connection's counters: :class:`Metrics` snapshots and their periodic feed."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import attrs
import trio

from ._outbox import Outbox, WithdrawReason

__all__ = ["Metrics", "MetricsUpdates", "snapshot"]


@attrs.frozen
class Metrics:
    """A snapshot of a connection's counters (``conn.metrics``). Counts are since this
    :class:`Connection` started; times are in seconds."""

    total_reconnects: int
    total_messages_sent: int
    """Events accepted by ``send``/``send_many`` (journaled) by this process."""
    total_messages_acked: int
    current_queue_size: int
    """Events waiting for an ack (including those recovered from the journal)."""
    outbox_bytes: int
    """Memory the waiting events hold: their frames plus a fixed bookkeeping cost each (what
    ``max_outbox_bytes`` limits)."""
    average_reconnect_time: float | None
    """Mean time from losing a link to being connected again (``None``: no reconnect yet)."""
    ack_latency_p50: float | None
    """Median time from ``send`` returning to the server's ack, over the last 1,024 acks."""
    ack_latency_p99: float | None
    replayed: int
    """Events transmitted again: after a reconnect, or recovered from the journal at start."""
    duplicates: int
    """Acks that said the server already had the event (a retransmission it had stored)."""
    rejected: int
    """Events the server refused for good (``Rejected`` outcomes)."""
    state: str
    failed_attempts: int = 0
    """Events that were in flight (sent, not yet acknowledged) when a link dropped: each such
    send attempt failed, and the event was sent again (or, at most once, resolved unknown)."""
    expired: int = 0
    """Events withdrawn because their time to live ran out."""
    dropped: int = 0
    """Events withdrawn to make room under ``outbox_full="drop_oldest"``."""
    discarded: int = 0
    """Events withdrawn by ``discard_pending()``."""
    unknown: int = 0
    """At most once: events whose link dropped before their ack (``Unknown`` outcomes)."""

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def snapshot(
    outbox: Outbox | None, reconnects: int, reconnect_times: list[float], state: str
) -> Metrics:
    p50 = p99 = None
    if outbox is not None and len(outbox.latencies) >= 2:
        cuts = statistics.quantiles(outbox.latencies, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    elif outbox is not None and outbox.latencies:
        p50 = p99 = outbox.latencies[0]
    return Metrics(
        total_reconnects=reconnects,
        total_messages_sent=outbox.sent_total if outbox else 0,
        total_messages_acked=outbox.acked_total if outbox else 0,
        current_queue_size=outbox.pending_count if outbox else 0,
        outbox_bytes=outbox.pending_bytes if outbox else 0,
        average_reconnect_time=(
            sum(reconnect_times) / len(reconnect_times) if reconnect_times else None
        ),
        ack_latency_p50=p50,
        ack_latency_p99=p99,
        replayed=outbox.replayed_total if outbox else 0,
        duplicates=outbox.duplicates_total if outbox else 0,
        rejected=outbox.rejected_total if outbox else 0,
        state=state,
        failed_attempts=outbox.failed_attempts_total if outbox else 0,
        expired=outbox.withdrawn_totals[WithdrawReason.EXPIRED] if outbox else 0,
        dropped=outbox.withdrawn_totals[WithdrawReason.DROPPED] if outbox else 0,
        discarded=outbox.withdrawn_totals[WithdrawReason.DISCARDED] if outbox else 0,
        unknown=outbox.unknown_total if outbox else 0,
    )


class MetricsUpdates:
    """``conn.metrics_updates(interval)``: a snapshot at once, then one per interval, until
    ``stopped`` is set."""

    def __init__(self, take: Callable[[], Metrics], stopped: trio.Event, interval: float) -> None:
        self._take = take
        self._stopped = stopped
        self._interval = interval
        self._next: float | None = None

    def __aiter__(self) -> MetricsUpdates:
        return self

    async def __anext__(self) -> Metrics:
        now = trio.current_time()
        if self._next is None:
            self._next = now
        with trio.move_on_at(self._next):
            await self._stopped.wait()
        if self._stopped.is_set():
            raise StopAsyncIteration
        self._next = max(self._next + self._interval, now)
        return self._take()
