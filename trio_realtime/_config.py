"""Client configuration: :class:`RealtimeConfig`, validated when it is built."""

from __future__ import annotations

import enum
import logging
import math
import ssl
from typing import Any

import attrs

from ._errors import ConfigError
from ._journal import Durability

__all__ = ["DeliveryStrategy", "OutboxFullPolicy", "RealtimeConfig"]


class DeliveryStrategy(enum.StrEnum):
    """What the client promises about upstream events."""

    AT_MOST_ONCE = "at_most_once"
    """An event reaches the wire at most once (MQTT QoS 0): never sent again, not after a
    reconnect, not after a restart. A send while disconnected waits in memory and goes out on
    the next link, once. An event in flight when its link drops resolves as
    :class:`~trio_realtime.Unknown` (the server may or may not have it); its seq is then sent as
    a skip. Nothing is journaled (the durability becomes ``memory``)."""
    AT_LEAST_ONCE = "at_least_once"
    """Journaled and retransmitted until acknowledged; the server's dedup makes it exactly once."""
    BEST_EFFORT_ORDERED = "best_effort_ordered"
    """Kept in order and retransmitted across reconnects while the process lives, but not
    journaled: what is pending is lost if the process dies (nothing is stored twice, nothing
    out of order)."""


class OutboxFullPolicy(enum.StrEnum):
    """What ``send`` does when the outbox holds ``max_outbox_messages`` or ``max_outbox_bytes``."""

    BLOCK = "block"
    """Wait until acknowledgements make room."""
    DROP_OLDEST = "drop_oldest"
    """Withdraw the oldest pending events to make room: each resolves as
    :class:`~trio_realtime.Withdrawn` (``reason="dropped"``), or as
    :class:`~trio_realtime.Acked` if the server turns out to have it already. Their seqs reach
    the server as skips, so the seqs stay contiguous."""
    RAISE = "raise"
    """Raise :class:`OutboxFull` at once."""


def _positive(name: str) -> Any:
    def check(_: object, __: attrs.Attribute[Any], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, f"must be a number of seconds, got {value!r}")
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(name, f"must be a positive, finite number of seconds, got {value!r}")

    return check


def _non_negative(name: str) -> Any:
    def check(_: object, __: attrs.Attribute[Any], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, f"must be a number, got {value!r}")
        if not (value >= 0 and math.isfinite(value)):
            raise ConfigError(name, f"must be >= 0 and finite, got {value!r}")

    return check


def _count(name: str, *, minimum: int = 1, optional: bool = False) -> Any:
    def check(_: object, __: attrs.Attribute[Any], value: int | None) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")

    return check


def _enum(kind: type[enum.StrEnum], name: str) -> Any:
    def convert(value: object) -> Any:
        try:
            return kind(value)  # type: ignore[arg-type]  # invalid values raise below
        except ValueError:
            choices = ", ".join(repr(m.value) for m in kind)
            raise ConfigError(name, f"must be one of {choices}, got {value!r}") from None

    return convert


def _to_strategy(value: object) -> DeliveryStrategy:
    result: DeliveryStrategy = _enum(DeliveryStrategy, "delivery_strategy")(value)
    return result


def _to_durability(value: object) -> Durability:
    result: Durability = _enum(Durability, "durability")(value)
    return result


def _to_outbox_full(value: object) -> OutboxFullPolicy:
    result: OutboxFullPolicy = _enum(OutboxFullPolicy, "outbox_full")(value)
    return result


def _log_level(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        level = logging.getLevelNamesMapping().get(value.upper())
        if level is not None:
            return level
    raise ConfigError("log_level", f"must be a logging level name or number, got {value!r}")


@attrs.frozen(kw_only=True)
class RealtimeConfig:
    """How a connection behaves. Every field has a default; invalid values raise
    :class:`ConfigError` naming the field when the config is built.

    Times are in seconds (floats).
    """

    delivery_strategy: DeliveryStrategy = attrs.field(
        default=DeliveryStrategy.AT_LEAST_ONCE,
        converter=_to_strategy,
    )
    initial_retry_delay: float = attrs.field(
        default=1.0, validator=_positive("initial_retry_delay")
    )
    """Backoff before the second retry (the first retry after a drop is immediate)."""
    max_retry_delay: float = attrs.field(default=30.0, validator=_positive("max_retry_delay"))
    """Ceiling of the exponential backoff."""
    jitter: float = attrs.field(default=1.0)
    """Fraction of each delay that is randomised: 1.0 is full jitter (uniform in [0, delay])."""
    max_retries: int | None = attrs.field(
        default=None, validator=_count("max_retries", minimum=0, optional=True)
    )
    """Reconnection attempts before the state becomes ``failed``; ``None`` retries forever."""
    heartbeat_interval: float = attrs.field(default=25.0, validator=_positive("heartbeat_interval"))
    heartbeat_timeout: float = attrs.field(default=10.0, validator=_positive("heartbeat_timeout"))
    """Silence after a ping, beyond which the link is declared dead."""
    connect_timeout: float = attrs.field(default=10.0, validator=_positive("connect_timeout"))
    batch_size: int = attrs.field(default=500, validator=_count("batch_size"))
    """Most frames in one WebSocket message."""
    batch_interval: float = attrs.field(default=0.0, validator=_non_negative("batch_interval"))
    """How long the writer lingers to fill a batch (0: send what is ready at once)."""
    durability: Durability = attrs.field(default=Durability.ALWAYS, converter=_to_durability)
    max_outbox_messages: int = attrs.field(default=100_000, validator=_count("max_outbox_messages"))
    max_outbox_bytes: int = attrs.field(
        default=64 * 1024 * 1024, validator=_count("max_outbox_bytes")
    )
    """Memory the unacknowledged events may hold: their encoded frames plus a fixed 384 bytes of
    bookkeeping each (so the limit bounds the process's growth, not just the payload bytes)."""
    outbox_full: OutboxFullPolicy = attrs.field(
        default=OutboxFullPolicy.BLOCK, converter=_to_outbox_full
    )
    default_ttl: float | None = attrs.field(default=None)
    """Time to live of every send that gives no ``ttl`` (seconds; ``None``: no limit). An event
    the server does not have by then is withdrawn (:class:`~trio_realtime.Withdrawn`,
    ``reason="expired"``)."""
    close_grace_period: float = attrs.field(
        default=5.0, validator=_non_negative("close_grace_period")
    )
    """On leaving ``open_realtime``, how long to wait for unacknowledged events to be acked."""
    use_tls: bool = False
    ssl_context: ssl.SSLContext | None = None
    """TLS settings for ``wss://`` (default: the system's trust store, verification on)."""
    log_level: int = attrs.field(default=logging.NOTSET, converter=_log_level)
    """The least severe of this connection's log messages to pass on to the ``trio_realtime``
    logger (``NOTSET``: all; the logger's own level and your handlers still apply). It filters
    this connection only: it never changes the logger's level for the process."""
    max_auth_failures: int = attrs.field(default=3, validator=_count("max_auth_failures"))
    """Consecutive token refusals (4001), each after a refresh by the auth delegate, before the
    connection gives up with :class:`AuthenticationFailed`."""
    network_monitor: bool = True
    """Run the standard :class:`~trio_realtime.services.NetworkMonitor` (it watches the host's
    network and reconnects at once when it comes back instead of waiting out the backoff);
    ``False`` leaves it out of ``open_realtime``'s services."""

    @default_ttl.validator
    def _check_ttl(self, _: attrs.Attribute[float | None], value: float | None) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError("default_ttl", f"must be a number of seconds or None, got {value!r}")
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError("default_ttl", f"must be positive and finite, got {value!r}")

    @jitter.validator
    def _check_jitter(self, _: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError("jitter", f"must be a fraction between 0 and 1, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.max_retry_delay < self.initial_retry_delay:
            raise ConfigError("max_retry_delay", "must not be smaller than initial_retry_delay")
        if (
            self.durability is not Durability.MEMORY
            and self.delivery_strategy is not DeliveryStrategy.AT_LEAST_ONCE
        ):
            # Only at_least_once journals; the others keep events in memory whatever is asked.
            object.__setattr__(self, "durability", Durability.MEMORY)


class ConnectionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The ``trio_realtime`` logger as one connection uses it: messages below the connection's
    ``log_level`` are dropped here, the rest go on to the logger (and its level) as usual."""

    def __init__(self, level: int) -> None:
        super().__init__(logging.getLogger("trio_realtime"), {})
        self.level = level

    def isEnabledFor(self, level: int) -> bool:
        return level >= self.level and self.logger.isEnabledFor(level)
