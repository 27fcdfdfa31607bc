"""Provider attempt order (strategies, passes, budgets) and fallback status patterns."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from onwards.config import FallbackSpec, Target, parse_config
from onwards.proxy.balance import attempt_order


def pool(*weights: int, strategy: str | None = None, **fallback: object) -> Target:
    spec: dict = {"providers": [{"url": f"http://p{i}", "weight": w} for i, w in enumerate(weights)]}
    if strategy is not None:
        spec["strategy"] = strategy
    if fallback:
        spec["fallback"] = {"enabled": True, **fallback}
    return parse_config({"targets": {"m": spec}}, "test.json").targets["m"]


def order(target: Target, seed: int = 0) -> list[int]:
    return [p.index for p in attempt_order(target, random.Random(seed))]


def test_priority_tries_in_definition_order():
    assert order(pool(1, 1, 1, strategy="priority")) == [0, 1, 2]


def test_priority_passes_repeat_until_the_budget():
    assert order(pool(1, 1, strategy="priority", max_attempts=5)) == [0, 1, 0, 1, 0]


def test_priority_budget_smaller_than_the_pool():
    assert order(pool(1, 1, 1, strategy="priority", max_attempts=2)) == [0, 1]


def test_priority_ignores_with_replacement():
    assert order(pool(1, 1, strategy="priority", max_attempts=4, with_replacement=True)) == [0, 1, 0, 1]


@pytest.mark.parametrize("strategy", ["priority", "weighted_random"])
def test_single_provider_is_retried_up_to_the_budget(strategy):
    assert order(pool(1, strategy=strategy, max_attempts=3)) == [0, 0, 0]


@pytest.mark.parametrize("strategy", ["priority", "weighted_random"])
def test_default_budget_is_one_attempt_per_provider(strategy):
    # Also without fallback: the budget is the pool size whatever fallback says.
    assert len(order(pool(1, 1, 1, strategy=strategy))) == 3
    assert order(pool(1, strategy=strategy)) == [0]


def test_single_form_target_yields_its_one_provider_once():
    target = parse_config({"targets": {"m": {"url": "http://a"}}}, "test.json").targets["m"]
    assert order(target) == [0]


def test_empty_pool_yields_nothing():
    target = parse_config({"targets": {"m": {"providers": []}}}, "test.json").targets["m"]
    assert order(target) == []


def test_weighted_pass_covers_every_provider_once():
    target = pool(1, 5, 2, 7)
    for seed in range(200):
        assert sorted(order(target, seed)) == [0, 1, 2, 3]


def test_weighted_passes_restart_after_covering_the_pool():
    target = pool(1, 3, 2, max_attempts=7)
    for seed in range(100):
        got = order(target, seed)
        assert len(got) == 7
        assert sorted(got[:3]) == [0, 1, 2]
        assert sorted(got[3:6]) == [0, 1, 2]


def test_weighted_first_choice_follows_the_weights():
    target = pool(3, 1)
    rng = random.Random(1234)
    firsts = Counter(next(attempt_order(target, rng)).index for _ in range(4000))
    ratio = firsts[0] / firsts[1]
    # Expected 3.0; with 4000 draws the ratio stays well inside these bounds.
    assert 2.4 < ratio < 3.8, firsts


def test_weighted_second_choice_is_the_other_provider():
    target = pool(3, 1)
    for seed in range(50):
        first, second = order(target, seed)
        assert first != second


def test_weight_zero_is_never_chosen():
    target = pool(0, 1, 0, 2, max_attempts=20)
    for seed in range(100):
        assert set(order(target, seed)) <= {1, 3}


def test_weight_zero_is_never_chosen_with_replacement():
    target = pool(0, 1, max_attempts=10, with_replacement=True)
    for seed in range(50):
        assert order(target, seed) == [1] * 10


def test_all_zero_weights_yield_nothing():
    # The config refuses such a pool; a Target built in code still gets no provider, not a crash.
    def zeroed(target: Target) -> Target:
        return replace(target, weights=(0,) * len(target.providers))

    assert order(zeroed(pool(1, 1, max_attempts=5))) == []
    assert order(zeroed(pool(1, 1, max_attempts=5, with_replacement=True))) == []
    assert order(zeroed(pool(1))) == []


def test_with_replacement_may_repeat_within_a_pass():
    target = pool(1, 1, max_attempts=5, with_replacement=True)
    runs = [order(target, seed) for seed in range(50)]
    assert all(len(run) == 5 for run in runs)
    assert any(run[0] == run[1] for run in runs)


def test_with_replacement_follows_the_weights():
    target = pool(9, 1, max_attempts=1, with_replacement=True)
    rng = random.Random(7)
    picks = Counter(next(attempt_order(target, rng)).index for _ in range(2000))
    assert picks[0] / 2000 > 0.85


def test_order_is_lazy():
    # The handler stops pulling after the first success; nothing past that should be decided.
    target = pool(1, 1, max_attempts=1000)
    iterator = attempt_order(target, random.Random(0))
    assert next(iterator).index in (0, 1)


@pytest.mark.parametrize(
    ("patterns", "status", "matched"),
    [
        ((5,), 500, True),
        ((5,), 503, True),
        ((5,), 599, True),
        ((5,), 499, False),
        ((5,), 200, False),
        ((4,), 429, True),
        ((50,), 500, True),
        ((50,), 509, True),
        ((50,), 510, False),
        ((52,), 524, True),
        ((52,), 502, False),
        ((502,), 502, True),
        ((502,), 503, False),
        ((429, 503), 429, True),
        ((429, 503), 503, True),
        ((429, 503), 500, False),
        ((), 500, False),
    ],
)
def test_fallback_status_patterns(patterns, status, matched):
    assert FallbackSpec(enabled=True, on_status=patterns).matches(status) is matched


def test_disabled_fallback_matches_nothing():
    spec = FallbackSpec(enabled=False, on_status=(5, 4, 500))
    assert not any(spec.matches(status) for status in (400, 429, 500, 503))


def test_parsed_fallback_matches():
    target = pool(1, 1, on_status=[5, 429])
    assert target.fallback.matches(502)
    assert target.fallback.matches(429)
    assert not target.fallback.matches(400)
