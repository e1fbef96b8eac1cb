"""The reference server's limits and timings (:class:`ServerConfig`)."""

from __future__ import annotations

import math

import attrs

from .._errors import ConfigError

__all__ = ["ServerConfig"]


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Server limits and timings (seconds). Every resource a remote user controls is bounded here,
    in bytes or entries, and checked when the frame arrives (docs/security.md lists them)."""

    heartbeat_interval: float = 25.0
    """Announced to clients in ``resume_response``."""
    heartbeat_timeout: float = 60.0
    """A connection silent for longer is closed with 4008."""
    handshake_timeout: float = 10.0
    """Time a new connection has to send ``resume`` (slowloris protection)."""
    max_frame_bytes: int = 1024 * 1024
    """Largest WebSocket message, in UTF-8 bytes; a lone event over it is refused (``too_large``),
    a batch over it closes the connection with 1009."""
    rate_limit: float = 2000.0
    """Messages per second per connection (bursts up to twice that); beyond: close 4029."""
    send_queue_bytes: int = 4 * 1024 * 1024
    """Bytes queued for one connection. Past it, a channel's events are no longer queued from
    memory: that channel catches up from the store (paged, in order, once) when the queue has
    drained. Answers and acks are always queued; if they alone pass twice this limit the client
    is not reading what it asks for and is closed with 4029."""
    max_lag: float = 60.0
    """A connection that accepts none of the data waiting for it for this long is closed 4029."""
    replay_page: int = 1000
    """Events read from the store at a time when a subscriber replays or catches up."""
    max_payload_depth: int = 32
    """Nesting of arrays and objects in an event's payload or presence metadata."""
    max_name_bytes: int = 256
    """UTF-8 bytes of a channel name, an event name, an idempotency key or a client_id."""
    max_subscriptions: int = 1000
    """Channels one connection may be subscribed to (and may be typing in)."""
    max_presence_bytes: int = 4096
    """Size of one presence metadata object, encoded as JSON."""
    max_presence_entries: int = 100
    """Presence entries (a channel, through a connection) one user may hold at once, those of
    connections in their grace period included."""
    retention_count: int = 100_000
    """Events each channel keeps (the newest): a subscriber further behind gets a gap."""
    retention_age: float = 7 * 24 * 3600
    """Seconds an event is kept."""
    dedup_window: float = 24 * 3600
    """Seconds a caller-chosen idempotency key is remembered (per user) to drop a repeat."""
    allowed_origins: frozenset[str] | None = None
    """If set, WebSocket handshakes with an ``Origin`` not listed are closed with 1008."""
    presence_timeout: float = 10.0
    """A user whose every connection to a channel is gone stays present this long (the grace
    period for a reconnect), then leaves."""
    node_poll_interval: float = 1.0
    """Several nodes on a shared store: how often a node reads the heads (and the presence) of
    the channels it feeds, in case a notice from another node was lost (each event is fanned
    out within this, each presence change re-synced)."""
    node_lease: float = 15.0
    """Several nodes on a shared store: a node renews its lease every third of this; the
    presence entries of a node whose lease ran out (its process died) leave at the lease's end
    plus ``presence_timeout``."""

    def __attrs_post_init__(self) -> None:
        for name in (
            "heartbeat_interval",
            "heartbeat_timeout",
            "handshake_timeout",
            "rate_limit",
            "max_lag",
            "presence_timeout",
            "node_poll_interval",
            "node_lease",
            "retention_age",
            "dedup_window",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ConfigError(name, f"must be a positive number, got {value!r}")
        for name in (
            "max_frame_bytes",
            "send_queue_bytes",
            "replay_page",
            "max_payload_depth",
            "max_name_bytes",
            "max_subscriptions",
            "max_presence_bytes",
            "max_presence_entries",
            "retention_count",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if self.max_payload_depth > _MAX_DEPTH:
            # The stores encode a payload inside a few levels of their own (orjson stops at 254).
            raise ConfigError(
                "max_payload_depth", f"must be at most {_MAX_DEPTH}, got {self.max_payload_depth}"
            )


#: The deepest payload any store or encoder of ours accepts, with room for their own nesting.
_MAX_DEPTH = 200
