"""What only the in-process limiter does: its description, idle cleanup, one event loop."""

from __future__ import annotations

import asyncio

from onwards.config.model import ConcurrencyCheck, LimitsSettings, RateCheck
from onwards.limits import MemoryLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_description_says_limits_are_per_process() -> None:
    limiter = MemoryLimiter()
    assert "each worker process counts on its own" in limiter.description
    assert limiter.healthy
    assert limiter.state == "closed"


async def test_concurrent_admissions_on_one_loop_are_exact() -> None:
    limiter = MemoryLimiter()
    bucket = RateCheck("target", "target:t", 0.001, 7)
    pool = ConcurrencyCheck("key", "key:k", 5)
    decisions = await asyncio.gather(*(limiter.admit((bucket,)) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 7
    decisions = await asyncio.gather(*(limiter.admit((pool,)) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 5


async def test_configure_forgets_full_buckets_and_empty_semaphores_only() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    fast = RateCheck("target", "target:fast", 10, 2)
    slow = RateCheck("target", "target:slow", 0.01, 2)
    pool = ConcurrencyCheck("target", "target:pool", 2)
    await limiter.admit((fast, slow))
    held = await limiter.admit((pool,))
    done = await limiter.admit((pool,))
    await limiter.release(done.lease)
    clock.now += 1  # fast is full again, slow is not
    limiter.configure(LimitsSettings())
    assert set(limiter._buckets) == {"target:slow"}
    assert set(limiter._semaphores) == {"target:pool"}
    await limiter.release(held.lease)
    assert limiter._semaphores == {}
    # Forgetting a full bucket changes nothing: it comes back full.
    assert [(await limiter.admit((fast,))).allowed for _ in range(3)] == [True, True, False]


async def test_expired_leases_are_swept_when_in_the_way() -> None:
    clock = Clock()
    limiter = MemoryLimiter(LimitsSettings(lease_ttl_ms=1_000, renew_interval_ms=500), clock=clock)
    pool = ConcurrencyCheck("target", "target:pool", 1)
    await limiter.admit((pool,))
    clock.now += 2
    assert (await limiter.admit((pool,))).allowed
    assert len(limiter._semaphores["target:pool"]) == 1
