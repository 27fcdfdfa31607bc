"""Retry backoff: the delay sequence, jitter and the total budget, after the Rust onwards'
target.rs backoff tests; and how `fallback.backoff` is read from the config."""

from __future__ import annotations

import random

import pytest

from onwards.config import ConfigError, FallbackSpec, parse_config
from onwards.config.model import Backoff
from onwards.proxy.backoff import RetryBudget, base_delay_ms, delay_ms


def test_first_retry_waits_initial_ms():
    assert base_delay_ms(Backoff(initial_ms=100), 1) == 100


def test_delays_grow_exponentially():
    backoff = Backoff(initial_ms=100, max_ms=100_000)
    assert [base_delay_ms(backoff, n) for n in range(1, 7)] == [100, 200, 400, 800, 1600, 3200]


def test_delay_is_clamped_to_max_ms():
    assert base_delay_ms(Backoff(initial_ms=100, max_ms=500), 10) == 500


def test_retry_index_zero_waits_nothing():
    assert base_delay_ms(Backoff(initial_ms=100), 0) == 0


def test_an_extreme_exponent_stays_bounded():
    assert base_delay_ms(Backoff(initial_ms=100, max_ms=5000, factor=10.0), 100_000) == 5000


def test_factor_one_is_constant():
    backoff = Backoff(initial_ms=250, factor=1.0)
    assert {base_delay_ms(backoff, n) for n in range(1, 10)} == {250}


def test_full_jitter_stays_within_zero_and_base():
    backoff = Backoff(initial_ms=100, max_ms=10_000)
    rng = random.Random(7)
    draws = [delay_ms(backoff, 3, rng) for _ in range(500)]
    assert all(0 <= d <= 400 for d in draws)
    assert len(set(draws)) > 50  # actually random, not a constant


def test_no_jitter_is_deterministic():
    assert delay_ms(Backoff(initial_ms=150, jitter="none"), 2) == 300


def test_budget_stops_a_pause_that_would_exceed_max_total():
    spec = FallbackSpec(
        enabled=True, backoff=Backoff(initial_ms=100, jitter="none"), max_total_backoff_ms=250
    )
    budget = RetryBudget(spec)
    assert budget.next_pause_ms(1) == 100
    assert budget.next_pause_ms(2) is None  # 100 + 200 > 250
    assert budget.exhausted
    assert budget.total_ms == 100


def test_without_backoff_retries_do_not_pause():
    budget = RetryBudget(FallbackSpec(enabled=True))
    assert budget.next_pause_ms(1) == 0
    assert not budget.exhausted


def fallback_of(fallback: dict) -> FallbackSpec:
    doc = {"targets": {"m": {"providers": [{"url": "http://a"}], "fallback": fallback}}}
    return parse_config(doc, "c.json").targets["m"].fallback


def test_backoff_config_defaults_match_rust():
    spec = fallback_of({"enabled": True, "backoff": {"initial_ms": 50}, "max_total_backoff_ms": 1000})
    assert spec.backoff == Backoff(initial_ms=50, max_ms=5000, factor=2.0, jitter="full")
    assert spec.max_total_backoff_ms == 1000


def test_fallback_without_backoff_has_none():
    assert fallback_of({"enabled": True}).backoff is None


def test_full_backoff_config_parses():
    spec = fallback_of({"backoff": {"initial_ms": 10, "max_ms": 80, "factor": 1.5, "jitter": "none"}})
    assert spec.backoff == Backoff(initial_ms=10, max_ms=80, factor=1.5, jitter="none")


@pytest.mark.parametrize(
    ("backoff", "message"),
    [
        ({}, "backoff.initial_ms: required"),
        ({"initial_ms": -1}, "backoff.initial_ms: must be an integer >= 0"),
        ({"initial_ms": 1, "jitter": "half"}, "backoff.jitter: must be 'full' or 'none'"),
        ({"initial_ms": 1, "factor": "2"}, "backoff.factor: must be a number, got string"),
    ],
)
def test_bad_backoff_config_is_refused(backoff, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        fallback_of({"backoff": backoff})
