"""Token limits: one suite of semantics for the in-process limiter and the real Lua scripts.

Same harness as test_limits_semantics.py (frozen clock, fakeredis running the scripts): reserve
the estimate at admission, all-or-nothing with every other limit, settle to the usage, report the
tightest buckets for the x-ratelimit-* headers.
"""

from __future__ import annotations

import pytest

from onwards.config.model import TokenCheck
from tests.unit import test_limits_semantics as shared
from tests.unit.test_limits_semantics import conc, rate

make = shared.make  # the fixture: both limiters, one frozen clock


def tokens(limiter_id: str, per_minute: int, burst: int | None = None, scope: str = "target") -> TokenCheck:
    return TokenCheck(scope, limiter_id, per_minute / 60, per_minute if burst is None else burst, per_minute)  # type: ignore[arg-type]


# One token an hour: refill over a test is far below the tolerances.
def slow(limiter_id: str, burst: int, scope: str = "target") -> TokenCheck:
    return TokenCheck(scope, limiter_id, 1 / 3600, burst, 1)  # type: ignore[arg-type]


async def test_reservation_takes_the_estimate_and_reports_the_tightest_buckets(make) -> None:
    h = await make()
    key = slow("key:a", 5_000, "key")
    pool = slow("target:t", 800)
    d = await h.limiter.admit((rate("target:t", 1, 3), key, pool), 100)
    assert d.allowed
    assert d.reservation is not None
    assert d.reservation.tokens == 100 and d.reservation.checks == (key, pool)
    assert (d.tokens.limit, d.tokens.remaining) == (800, 700)
    assert d.tokens.reset_s == pytest.approx(100 * 3600, rel=1e-6)
    assert (d.requests.limit, d.requests.remaining) == (3, 2)
    assert d.requests.reset_s == pytest.approx(1.0, abs=0.002)


async def test_an_estimate_that_does_not_fit_spends_nothing_anywhere(make) -> None:
    h = await make()
    key = slow("key:a", 1_000, "key")
    pool = slow("target:t", 500)
    req = rate("key:a", 0.001, 10, "key")
    assert (await h.limiter.admit((req, key, pool), 400)).allowed
    refused = await h.limiter.admit((req, key, pool), 400)
    assert not refused.allowed and refused.refused == pool and not refused.hopeless
    assert refused.retry_after == pytest.approx(300 * 3600, rel=1e-3)
    assert refused.reservation is None and refused.lease is None
    # Neither the key's tokens nor its request bucket paid for the refusal.
    d = await h.limiter.admit((req, key), 600)
    assert d.allowed and d.tokens.remaining == 0 and d.requests.remaining == 8


async def test_an_estimate_larger_than_the_whole_bucket_is_hopeless(make) -> None:
    h = await make()
    pool = tokens("target:t", 6_000, 1_000)
    d = await h.limiter.admit((pool,), 1_001)
    assert not d.allowed and d.hopeless and d.retry_after is None and d.refused == pool
    assert (await h.limiter.admit((pool,), 1_000)).allowed


async def test_settlement_refunds_the_unused_part(make) -> None:
    h = await make()
    pool = slow("target:t", 1_000)
    d = await h.limiter.admit((pool,), 900)
    h.limiter.settle_soon(d.reservation, 150)
    again = await h.limiter.admit((pool,), 850)
    assert again.allowed and again.tokens.remaining == 0
    assert not (await h.limiter.admit((pool,), 1)).allowed


async def test_settlement_charges_beyond_the_reservation_and_the_debt_refills(make) -> None:
    h = await make()
    pool = tokens("target:t", 60, 100)  # one token a second
    d = await h.limiter.admit((pool,), 50)
    h.limiter.settle_soon(d.reservation, 130)  # 80 beyond: the level is -30
    refused = await h.limiter.admit((pool,), 0)
    assert not refused.allowed and refused.retry_after == pytest.approx(30, abs=0.002)
    h.advance(30.001)
    assert (await h.limiter.admit((pool,), 0)).allowed
    refused = await h.limiter.admit((pool,), 10)
    assert refused.retry_after == pytest.approx(10, abs=0.01)


async def test_a_refund_never_lifts_the_bucket_above_its_burst(make) -> None:
    h = await make()
    pool = tokens("target:t", 60, 100)
    d = await h.limiter.admit((pool,), 100)
    h.advance(100)  # refilled while the request ran
    h.limiter.settle_soon(d.reservation, 0)
    assert (await h.limiter.admit((pool,), 100)).allowed
    assert not (await h.limiter.admit((pool,), 1)).allowed


async def test_concurrent_reservations_never_exceed_the_bucket(make) -> None:
    h = await make()
    pool = slow("target:t", 1_000)
    decisions = [await h.limiter.admit((pool,), 300) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    for d in decisions[:3]:
        h.limiter.settle_soon(d.reservation, 100)
    # After settlement the bucket holds the burst minus the actual usage.
    last = await h.limiter.admit((pool,), 700)
    assert last.allowed and last.tokens.remaining == 0


async def test_a_token_refusal_keeps_the_semaphores_free(make) -> None:
    h = await make()
    pool = slow("target:t", 10)
    semaphore = conc("target:t", 1)
    refused = await h.limiter.admit((semaphore, pool), 11)
    assert refused.hopeless
    held = await h.limiter.admit((semaphore, pool), 5)
    assert held.allowed and held.lease is not None
    h.limiter.release_soon(held.lease)
    h.limiter.settle_soon(held.reservation, 5)
    assert (await h.limiter.admit((semaphore, pool), 5)).allowed


async def test_request_and_token_buckets_of_one_scope_are_separate(make) -> None:
    h = await make()
    requests = rate("key:a", 0.001, 2, "key")
    key_tokens = slow("key:a", 100, "key")
    d = await h.limiter.admit((requests, key_tokens), 60)
    assert d.requests.remaining == 1 and d.tokens.remaining == 40
    d = await h.limiter.admit((requests, key_tokens), 40)
    assert d.requests.remaining == 0 and d.tokens.remaining == 0


async def test_no_token_checks_means_no_reservation(make) -> None:
    h = await make()
    d = await h.limiter.admit((rate("target:t", 1, 5),), 1_000)
    assert d.allowed and d.reservation is None and d.tokens is None and d.requests.remaining == 4


async def test_a_zero_estimate_is_admitted_while_the_bucket_is_not_in_debt(make) -> None:
    h = await make()
    pool = slow("target:t", 10)
    d = await h.limiter.admit((pool,), 10)
    assert d.allowed and d.tokens.remaining == 0
    assert (await h.limiter.admit((pool,), 0)).allowed
    assert not (await h.limiter.admit((pool,), 1)).allowed


async def test_a_settlement_after_the_clock_stepped_back_neither_drains_nor_refills(make) -> None:
    # A failover to a Redis whose clock is behind, between admission and settlement.
    h = await make()
    pool = tokens("target:t", 60, 100)  # one token a second
    d = await h.limiter.admit((pool,), 80)  # 20 left
    h.advance(-30)
    h.limiter.settle_soon(d.reservation, 30)  # 50 back: 70, no refill for the negative time
    h.advance(30)  # back at the bucket's stamp: no time has passed for it
    assert (await h.limiter.admit((pool,), 70)).allowed
    refused = await h.limiter.admit((pool,), 1)
    assert not refused.allowed and refused.retry_after == pytest.approx(1, abs=0.002)
