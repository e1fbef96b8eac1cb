"""Events the protocol objects derive from frames, beside the frames themselves.

Most of what :meth:`ClientProtocol.events` and :meth:`ServerProtocol.events` yield are the received
frames as they are. These classes report what the state machines concluded about them.
"""

from __future__ import annotations

import attrs

__all__ = ["DuplicateEvent", "Gap", "OutOfOrderEvent"]


@attrs.frozen
class DuplicateEvent:
    """Server side: an upstream event whose ``seq`` this client already delivered. It must not be
    published again; the next :meth:`ServerProtocol.ack` lists it in ``duplicates``."""

    seq: int
    idempotency_key: str | None
    """``None`` for a duplicate :class:`Skip` (which no ack lists)."""


@attrs.frozen
class OutOfOrderEvent:
    """Server side: an upstream event skipped ahead of the next expected seq. The server answers with a
    fatal ``out_of_order`` error and closes (4000); the client resumes and retransmits in order. Further
    upstream events on this connection are ignored."""

    seq: int
    expected: int


@attrs.frozen
class Gap:
    """Events of a channel were lost to this client: the server no longer had them, or the log's
    continuity was lost (PROTOCOL.md section 2: never a silent gap). Offsets ``first_missing`` to
    ``last_missing`` (``None``: unknown) of ``epoch``, the epoch the channel continues under.
    Resync from your source of truth. ``conn.messages()`` yields it where the events would be."""

    channel: str
    epoch: str
    first_missing: int
    last_missing: int | None
