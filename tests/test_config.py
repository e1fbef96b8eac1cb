"""RealtimeConfig validation and the backoff schedule."""

from __future__ import annotations

import logging
import random

import attrs
import pytest

from trio_realtime import ConfigError, DeliveryStrategy, Durability, RealtimeConfig
from trio_realtime._backoff import Backoff


def test_defaults() -> None:
    config = RealtimeConfig()
    assert config.delivery_strategy is DeliveryStrategy.AT_LEAST_ONCE
    assert config.durability is Durability.ALWAYS
    assert config.max_retries is None
    assert config.log_level == logging.NOTSET


def test_strings_are_accepted_for_enums_and_levels() -> None:
    config = RealtimeConfig(durability="batch", outbox_full="raise", log_level="debug")
    assert config.durability is Durability.BATCH
    assert config.log_level == logging.DEBUG


def test_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        RealtimeConfig().jitter = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("delivery_strategy", "exactly_twice"),
        ("initial_retry_delay", 0),
        ("initial_retry_delay", -1),
        ("initial_retry_delay", float("inf")),
        ("initial_retry_delay", "1"),
        ("max_retry_delay", float("nan")),
        ("jitter", 1.5),
        ("jitter", True),
        ("max_retries", -1),
        ("max_retries", 2.5),
        ("heartbeat_interval", 0),
        ("heartbeat_timeout", None),
        ("connect_timeout", -3),
        ("batch_size", 0),
        ("batch_interval", -0.1),
        ("durability", "sometimes"),
        ("max_outbox_messages", 0),
        ("max_outbox_bytes", True),
        ("outbox_full", "explode"),
        ("default_ttl", 0),
        ("default_ttl", float("inf")),
        ("default_ttl", "5"),
        ("close_grace_period", -1),
        ("log_level", "chatty"),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        RealtimeConfig(**{field: value})  # type: ignore[arg-type]
    assert info.value.option == field
    assert field in str(info.value)


def test_retry_delays_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="max_retry_delay"):
        RealtimeConfig(initial_retry_delay=10, max_retry_delay=5)


def test_strategies_without_journal_use_memory() -> None:
    assert RealtimeConfig(delivery_strategy="at_most_once").durability is Durability.MEMORY
    assert RealtimeConfig(delivery_strategy="best_effort_ordered").durability is Durability.MEMORY


def test_backoff_first_retry_is_immediate_then_doubles_to_the_ceiling() -> None:
    backoff = Backoff(0.5, 4.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.0


def test_backoff_full_jitter_stays_within_bounds() -> None:
    backoff = Backoff(1.0, 30.0, jitter=1.0, rng=random.Random(7))
    for attempt in range(200):
        ceiling = backoff.ceiling(attempt)
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling
    delays = [Backoff(1.0, 30.0, rng=random.Random(s)).ceiling(3) for s in range(3)]
    assert delays == [4.0, 4.0, 4.0]


def test_backoff_partial_jitter_and_floor() -> None:
    backoff = Backoff(2.0, 8.0, jitter=0.25, rng=random.Random(1))
    backoff.next_delay()
    delay = backoff.next_delay()
    assert 1.5 <= delay <= 2.0
    assert backoff.at_least(100.0) == 100.0


def test_backoff_survives_huge_attempt_counts() -> None:
    backoff = Backoff(1.0, 30.0, jitter=0.0)
    backoff.attempt = 10_000
    assert backoff.next_delay() == 30.0
