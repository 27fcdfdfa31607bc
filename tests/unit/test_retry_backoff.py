"""Retry backoff: the delay sequence, jitter and the total budget, after the Rust onwards'
target.rs backoff tests; and how `fallback.backoff` is read from the config."""

from __future__ import annotations

import asyncio
import random
import types

import pytest

from onwards.config import ConfigError, FallbackSpec, parse_config
from onwards.config.model import Backoff
from onwards.proxy.backoff import RetryBudget, base_delay_ms, delay_ms
from onwards.proxy.balance import attempt_order


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


# --- weighted least-connections (load_balancer.rs tests) ----------------------------------------


def weighted(*weights: int, **fallback: object):
    spec: dict = {"providers": [{"url": f"http://p{i}", "weight": w} for i, w in enumerate(weights)]}
    if fallback:
        spec["fallback"] = {"enabled": True, **fallback}
    return parse_config({"targets": {"m": spec}}, "c.json").targets["m"]


def first_pick(target, load: dict[str, int], seed: int = 0) -> int:
    return next(attempt_order(target, random.Random(seed), load)).index


def test_least_connections_prefers_the_less_loaded_provider():
    target = weighted(1, 1)
    assert all(first_pick(target, {"m/0": 3, "m/1": 1}, seed) == 1 for seed in range(50))
    # Freed: back to a random tie.
    assert {first_pick(target, {"m/0": 0, "m/1": 0}, seed) for seed in range(50)} == {0, 1}


def test_least_connections_respects_weights():
    # 3 in flight on a weight-3 provider scores the same as 1 on a weight-1 provider: a tie.
    target = weighted(3, 1)
    assert {first_pick(target, {"m/0": 3, "m/1": 1}, seed) for seed in range(100)} == {0, 1}
    assert all(first_pick(target, {"m/0": 4, "m/1": 1}, seed) == 1 for seed in range(50))


def test_held_requests_settle_near_the_weight_ratio():
    target = weighted(3, 1)
    load = {"m/0": 0, "m/1": 0}
    rng = random.Random(3)
    for _ in range(400):  # every request stays in flight: each pick adds to the load
        load[next(attempt_order(target, rng, load)).label] += 1
    assert 2.0 <= load["m/0"] / load["m/1"] <= 5.0


def test_weight_zero_is_never_picked_even_when_idle():
    target = weighted(0, 1)
    assert all(first_pick(target, {"m/1": 100}, seed) == 1 for seed in range(20))


def test_fallback_order_is_evaluated_lazily_with_current_load():
    target = weighted(1, 1, max_attempts=2)
    load = {"m/0": 0, "m/1": 5}
    order = attempt_order(target, random.Random(0), load)
    assert next(order).index == 0
    assert next(order).index == 1  # the only one left in the pass


# --- through the app: pauses between attempts, and the budget ------------------------------------


@pytest.fixture
def mock_a(mock_upstream_factory):
    return mock_upstream_factory("a")


@pytest.fixture
def mock_b(mock_upstream_factory):
    return mock_upstream_factory("b")


class Recorded:
    def __init__(self) -> None:
        self.retries = 0
        self.exhausted = 0
        self.pauses: list[float] = []


@pytest.fixture
def recorded(monkeypatch):
    from onwards.metrics import Metrics
    from onwards.proxy import attempts

    seen = Recorded()

    async def no_wait(seconds: float) -> None:  # the pause is recorded, not waited for
        seen.pauses.append(seconds)

    # Only the attempt loop's asyncio gets the recording sleep: patching the module itself would
    # also stop every other task's sleep (the body-timeout sweeper would spin and never yield).
    monkeypatch.setattr(attempts, "asyncio", types.SimpleNamespace(**{**vars(asyncio), "sleep": no_wait}))
    monkeypatch.setattr(Metrics, "retry_backoff", lambda self: setattr(seen, "retries", seen.retries + 1))
    monkeypatch.setattr(
        Metrics, "retry_budget_exhausted", lambda self: setattr(seen, "exhausted", seen.exhausted + 1)
    )
    return seen


def failing_pool(mock_a, mock_b, **fallback: object) -> dict:
    return {
        "targets": {
            "m": {
                "strategy": "priority",
                "fallback": {"enabled": True, "on_status": [5], **fallback},
                "providers": [{"url": mock_a.url}, {"url": mock_b.url}],
            }
        }
    }


async def test_backoff_pauses_between_attempts_but_not_after_the_last(write_config, mock_a, mock_b, recorded):
    from tests.support.app_client import app_client

    mock_a.status = mock_b.status = 503
    config = failing_pool(mock_a, mock_b, max_attempts=3, backoff={"initial_ms": 100, "jitter": "none"})
    async with app_client(write_config(config)) as client:
        r = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 502  # the last gateway error, not the upstream's 503
    assert (mock_a.request_count, mock_b.request_count) == (2, 1)
    assert recorded.pauses == [0.1, 0.2]
    assert recorded.retries == 2 and recorded.exhausted == 0


async def test_max_total_backoff_stops_retrying_and_counts_it(write_config, mock_a, mock_b, recorded):
    from tests.support.app_client import app_client

    mock_a.status = mock_b.status = 503
    config = failing_pool(
        mock_a, mock_b, backoff={"initial_ms": 100, "jitter": "none"}, max_total_backoff_ms=50
    )
    async with app_client(write_config(config)) as client:
        r = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 502
    assert (mock_a.request_count, mock_b.request_count) == (1, 0)
    assert recorded.pauses == [] and recorded.exhausted == 1


async def test_without_backoff_fallback_does_not_pause(write_config, mock_a, mock_b, recorded):
    from tests.support.app_client import app_client

    mock_a.status = 503
    async with app_client(write_config(failing_pool(mock_a, mock_b))) as client:
        r = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 200
    assert recorded.pauses == [] and recorded.retries == 0
