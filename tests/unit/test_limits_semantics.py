"""One suite of limiter semantics, run against the in-process limiter and the real Lua scripts.

The scripts run inside fakeredis (Lua 5.1 via lupa). Time is frozen for both backends: the memory
limiter takes a clock, and fakeredis reads ``time.time()`` for TIME and for key expiry, which the
fixture replaces with the same fake clock, so refill and lease expiry are tested exactly.
"""

from __future__ import annotations

import types
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import fakeredis
import fakeredis._helpers
import fakeredis._socket._base
import fakeredis.commands_mixins.server_mixin
import pytest

from onwards.config.model import ConcurrencyCheck, LimitsSettings, RateCheck
from onwards.limits import ALLOW, MemoryLimiter, RedisLimiter
from onwards.limits.base import Lease, Limiter
from tests.support.redis_fake import FakeRedisTransport


class FakeClock:
    def __init__(self) -> None:
        # A realistic epoch, so the scripts' millisecond arithmetic sees real magnitudes.
        self.now = 1_732_000_000.123456

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    limiter: Limiter
    clock: FakeClock

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


DEFAULTS = LimitsSettings()
SHORT_LEASES = LimitsSettings(lease_ttl_ms=1_000, renew_interval_ms=300)


@pytest.fixture(params=["memory", "redis-lua"])
async def make(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator:
    clock = FakeClock()
    started: list[Limiter] = []
    if request.param == "redis-lua":
        wall = types.SimpleNamespace(time=clock)
        for module in (
            fakeredis.commands_mixins.server_mixin,  # TIME
            fakeredis._helpers,  # expiry bookkeeping
            fakeredis._socket._base,  # "now" of each database when a command runs
        ):
            monkeypatch.setattr(module, "time", wall)
        server = fakeredis.FakeServer()

    async def factory(settings: LimitsSettings = DEFAULTS) -> Harness:
        if request.param == "memory":
            limiter: Limiter = MemoryLimiter(settings, clock=clock)
        else:
            # The production batched path (encoding, batcher, policy) over an in-process transport.
            transport = FakeRedisTransport(server)
            limiter = RedisLimiter(transport=transport, prefix=f"t{uuid.uuid4().hex[:8]}", clock=clock)
        await limiter.start(settings)
        started.append(limiter)
        return Harness(limiter, clock)

    yield factory
    for limiter in started:
        await limiter.close()


def rate(limiter_id: str, per_second: float, burst: int, scope: str = "target") -> RateCheck:
    return RateCheck(scope, limiter_id, per_second, burst)  # type: ignore[arg-type]


def conc(limiter_id: str, limit: int, scope: str = "target") -> ConcurrencyCheck:
    return ConcurrencyCheck(scope, limiter_id, limit)  # type: ignore[arg-type]


def codes(decisions) -> list[int]:
    return [200 if d.allowed else 429 for d in decisions]


async def test_all_or_nothing_across_key_and_target(make) -> None:
    h = await make()
    key = rate("key:alice", 0.001, 4, "key")
    tight = rate("target:tight", 0.001, 2)
    tight_results = [await h.limiter.admit((key, tight)) for _ in range(5)]
    # `loose` has no target limit: only the key's bucket applies.
    loose_results = [await h.limiter.admit((key,)) for _ in range(3)]
    assert codes(tight_results) == [200, 200, 429, 429, 429]
    assert codes(loose_results) == [200, 200, 429]
    # The tight refusals were the target's; they left the key's tokens alone.
    assert all(d.refused == tight for d in tight_results[2:])
    assert loose_results[2].refused == key


async def test_refusal_names_first_refusing_check_in_order(make) -> None:
    h = await make()
    a = rate("target:a", 1, 1)
    b = rate("key:b", 1, 1, "key")
    assert (await h.limiter.admit((a, b))).allowed
    assert (await h.limiter.admit((b, a))).refused == b


async def test_a_bucket_known_empty_refuses_without_asking_until_it_can_refill(make) -> None:
    h = await make()
    a = rate("target:a", 1, 1)
    b = rate("key:b", 1, 1, "key")
    assert (await h.limiter.admit((a,))).allowed
    assert (await h.limiter.admit((a,))).refused == a
    # The Redis limiter now knows `a` is empty for about a second and names it, wherever it
    # stands, without a round trip; the in-process limiter names the first refusing check.
    # Either way the refusal is true and spends nothing: b keeps its token.
    assert (await h.limiter.admit((b, a))).refused in (a, b)
    h.advance(1.001)
    assert (await h.limiter.admit((b, a))).allowed


async def test_concurrency_refusal_spends_no_tokens_and_acquires_nothing(make) -> None:
    h = await make()
    key = rate("key:k", 0.001, 3, "key")
    pool = conc("target:pool", 5)
    closed = conc("provider:p:0", 0, "provider")
    for _ in range(4):
        d = await h.limiter.admit((key, pool, closed))
        assert not d.allowed
        assert d.refused == closed
        assert d.retry_after is None
        assert d.lease is None
    # Neither the key's three tokens nor the pool's five permits were touched.
    assert codes([await h.limiter.admit((key,)) for _ in range(4)]) == [200, 200, 200, 429]
    assert codes([await h.limiter.admit((pool,)) for _ in range(6)]) == [200] * 5 + [429]


async def test_rate_refusal_does_not_acquire_earlier_semaphores(make) -> None:
    h = await make()
    pool = conc("target:pool", 1)
    empty = rate("key:k", 0.001, 1, "key")
    assert (await h.limiter.admit((empty,))).allowed
    d = await h.limiter.admit((pool, empty))
    assert d.refused == empty
    assert (await h.limiter.admit((pool,))).allowed


async def test_bucket_starts_full_and_refills_fractionally(make) -> None:
    h = await make()
    slow = rate("target:slow", 0.5, 1)  # one token every two seconds
    assert (await h.limiter.admit((slow,))).allowed
    d = await h.limiter.admit((slow,))
    assert not d.allowed
    assert d.retry_after == pytest.approx(2.0, abs=0.002)
    h.advance(1.0)
    d = await h.limiter.admit((slow,))
    assert not d.allowed
    assert d.retry_after == pytest.approx(1.0, abs=0.002)
    h.advance(1.0)
    assert (await h.limiter.admit((slow,))).allowed
    assert not (await h.limiter.admit((slow,))).allowed


async def test_retry_after_is_time_until_one_token(make) -> None:
    h = await make()
    fast = rate("target:fast", 4, 2)
    assert codes([await h.limiter.admit((fast,)) for _ in range(3)]) == [200, 200, 429]
    h.advance(0.1)  # 0.4 of a token back
    d = await h.limiter.admit((fast,))
    assert d.retry_after == pytest.approx(0.15, abs=0.002)
    h.advance(0.15)
    assert (await h.limiter.admit((fast,))).allowed


async def test_retry_after_is_positive_when_almost_refilled(make) -> None:
    h = await make()
    b = rate("target:b", 1, 1)
    assert (await h.limiter.admit((b,))).allowed
    h.advance(0.9999)
    d = await h.limiter.admit((b,))
    assert not d.allowed
    assert 0 < d.retry_after <= 0.002


async def test_long_idle_refills_only_to_burst(make) -> None:
    h = await make()
    b = rate("target:b", 10, 3)
    assert codes([await h.limiter.admit((b,)) for _ in range(4)]) == [200, 200, 200, 429]
    h.advance(3600)
    assert codes([await h.limiter.admit((b,)) for _ in range(4)]) == [200, 200, 200, 429]


async def test_lowered_burst_clamps_at_next_request(make) -> None:
    h = await make()
    before = rate("target:b", 0.001, 10)
    assert (await h.limiter.admit((before,))).allowed  # 9 tokens left
    after = rate("target:b", 0.001, 3)  # the same limiter after a config reload
    assert codes([await h.limiter.admit((after,)) for _ in range(4)]) == [200, 200, 200, 429]


async def test_raised_burst_fills_by_refill_not_at_once(make) -> None:
    h = await make()
    small = rate("target:b", 1, 2)
    assert codes([await h.limiter.admit((small,)) for _ in range(3)]) == [200, 200, 429]
    big = rate("target:b", 1, 10)
    h.advance(3)
    assert codes([await h.limiter.admit((big,)) for _ in range(4)]) == [200, 200, 200, 429]


async def test_bucket_listed_twice_needs_two_tokens(make) -> None:
    h = await make()
    b = rate("target:b", 0.001, 3)
    assert (await h.limiter.admit((b, b))).allowed
    assert not (await h.limiter.admit((b, b))).allowed  # one token left, two needed
    assert (await h.limiter.admit((b,))).allowed


async def test_semaphore_limits_holders_until_release(make) -> None:
    h = await make()
    pool = conc("target:pool", 2)
    first = await h.limiter.admit((pool,))
    second = await h.limiter.admit((pool,))
    third = await h.limiter.admit((pool,))
    assert codes([first, second, third]) == [200, 200, 429]
    assert third.refused == pool
    assert third.retry_after is None
    assert first.lease is not None and first.lease.limiter_ids == ("target:pool",)
    assert first.lease.lease_id != second.lease.lease_id
    await h.limiter.release(first.lease)
    assert (await h.limiter.admit((pool,))).allowed
    assert not (await h.limiter.admit((pool,))).allowed


async def test_limit_zero_refuses_everything(make) -> None:
    h = await make()
    shut = conc("key:k", 0, "key")
    for _ in range(3):
        d = await h.limiter.admit((shut,))
        assert not d.allowed
        assert d.refused == shut


async def test_one_lease_covers_every_semaphore_of_the_request(make) -> None:
    h = await make()
    key = conc("key:k", 1, "key")
    target = conc("target:t", 1)
    provider = conc("provider:t:0", 1, "provider")
    bucket = rate("target:t", 1, 5)
    d = await h.limiter.admit((key, bucket, target, provider))
    assert d.allowed
    assert d.lease.limiter_ids == ("key:k", "target:t", "provider:t:0")
    assert d.lease.ttl_ms == LimitsSettings().lease_ttl_ms
    for check in (key, target, provider):
        assert (await h.limiter.admit((check,))).refused == check
    await h.limiter.release(d.lease)
    for check in (key, target, provider):
        assert (await h.limiter.admit((check,))).allowed


async def test_rate_only_admission_has_no_lease(make) -> None:
    h = await make()
    d = await h.limiter.admit((rate("target:t", 1, 1),))
    assert d.allowed and not d.degraded
    assert d.lease is None and d.reservation is None


async def test_no_checks_admits(make) -> None:
    h = await make()
    assert await h.limiter.admit(()) == ALLOW


async def test_a_list_of_checks_works_like_a_tuple(make) -> None:
    h = await make()
    b = rate("target:b", 0.001, 1)
    assert (await h.limiter.admit([b])).allowed
    assert not (await h.limiter.admit([b])).allowed


async def test_lease_of_a_crashed_worker_expires(make) -> None:
    h = await make(SHORT_LEASES)
    pool = conc("target:pool", 1)
    held = await h.limiter.admit((pool,))
    assert held.lease.ttl_ms == 1_000
    h.advance(0.99)
    assert not (await h.limiter.admit((pool,))).allowed
    h.advance(0.02)  # never released, but the lease is over
    assert (await h.limiter.admit((pool,))).allowed


async def test_renew_extends_the_lease(make) -> None:
    h = await make(SHORT_LEASES)
    pool = conc("target:pool", 1)
    held = await h.limiter.admit((pool,))
    h.advance(0.8)
    await h.limiter.renew(held.lease)
    h.advance(0.8)  # 1.6 s after admission, 0.8 s after the renewal
    assert not (await h.limiter.admit((pool,))).allowed
    h.advance(0.25)
    assert (await h.limiter.admit((pool,))).allowed


async def test_renew_never_revives_a_swept_lease(make) -> None:
    h = await make(SHORT_LEASES)
    pool = conc("target:pool", 1)
    old = await h.limiter.admit((pool,))
    h.advance(1.5)
    new = await h.limiter.admit((pool,))  # sweeps the expired lease and takes the permit
    assert new.allowed
    await h.limiter.renew(old.lease)
    await h.limiter.release(new.lease)
    assert (await h.limiter.admit((pool,))).allowed  # the old lease did not come back
    assert not (await h.limiter.admit((pool,))).allowed


async def test_double_release_frees_one_permit(make) -> None:
    h = await make()
    pool = conc("target:pool", 2)
    a = await h.limiter.admit((pool,))
    b = await h.limiter.admit((pool,))
    assert b.allowed
    await h.limiter.release(a.lease)
    await h.limiter.release(a.lease)
    assert codes([await h.limiter.admit((pool,)) for _ in range(2)]) == [200, 429]


async def test_release_of_unknown_lease_is_harmless(make) -> None:
    h = await make()
    pool = conc("target:pool", 1)
    held = await h.limiter.admit((pool,))
    await h.limiter.release(Lease("not-a-lease", ("target:pool", "target:other"), 1000))
    await h.limiter.renew(Lease("not-a-lease", ("target:pool",), 1000))
    assert not (await h.limiter.admit((pool,))).allowed
    await h.limiter.release(held.lease)
    assert (await h.limiter.admit((pool,))).allowed


async def test_limiters_are_separate_per_id_and_kind(make) -> None:
    h = await make()
    # The same limiter id as a bucket and as a semaphore are two different things.
    bucket = rate("target:x", 0.001, 1)
    sem = conc("target:x", 1)
    other = rate("target:y", 0.001, 1)
    assert (await h.limiter.admit((bucket, sem))).allowed
    assert (await h.limiter.admit((other,))).allowed
    assert not (await h.limiter.admit((bucket,))).allowed
    assert not (await h.limiter.admit((sem,))).allowed


@pytest.mark.parametrize(
    "bad, message",
    [
        (RateCheck("target", "target:z", 0, 1), "rate must be a positive number"),
        (RateCheck("target", "target:z", float("nan"), 1), "rate must be a positive number"),
        (RateCheck("target", "target:z", 1, 0), "burst must be an integer >= 1"),
        (ConcurrencyCheck("target", "target:z", -1), "limit must be an integer >= 0"),
    ],
)
async def test_invalid_checks_are_refused_with_a_clear_error(make, bad, message) -> None:
    h = await make()
    with pytest.raises(ValueError, match=message) as err:
        await h.limiter.admit((rate("target:ok", 1, 1), bad))
    assert "target:z" in str(err.value)


async def test_clock_stepping_back_neither_drains_nor_refills_twice(make) -> None:
    # Redis after a failover to a server whose clock is behind; the memory limiter sees the
    # same steps from its injected clock.
    h = await make()
    b = rate("target:b", 1, 2)
    assert (await h.limiter.admit((b,))).allowed  # one token left
    h.advance(-5)
    assert (await h.limiter.admit((b,))).allowed  # not drained by negative elapsed time
    h.advance(5)  # back where the bucket was last updated: no time has passed for it
    assert not (await h.limiter.admit((b,))).allowed
    h.advance(1)
    assert (await h.limiter.admit((b,))).allowed
