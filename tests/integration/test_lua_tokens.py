"""Token buckets in admit.lua and their settlement in release.lua, called directly on a real Redis.

The scripts are the limiter's specification; these tests pin their argument layout and replies
(what the Python encoders build on), independent of the limiter classes. Every test uses its own
key prefix and removes its keys. Rates are tiny (one token an hour) wherever a level is asserted,
so the refill between two calls is far below the tolerance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from onwards.limits.redis import load_script

pytestmark = pytest.mark.redis

SLOW = 1 / 3600  # one token an hour: refill between two calls is negligible


@pytest.fixture
async def redis(redis_url: str, unique_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{unique_prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


Check = tuple[str, str, float, object]  # kind, key, first value, second value


class Scripts:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.base = f"{prefix}:{{{prefix}}}"
        self.admit_body = load_script("admit").body
        self.release_body = load_script("release").body

    def tk(self, name: str) -> str:
        return f"{self.base}:tk:{name}"

    def rl(self, name: str) -> str:
        return f"{self.base}:rl:{name}"

    def cc(self, name: str) -> str:
        return f"{self.base}:cc:{name}"

    async def admit(self, *requests: tuple[str, int, Sequence[Check]], ttl: int = 30_000) -> list:
        keys: list[str] = []
        argv: list[object] = [len(requests), ttl]
        for lease, cost, checks in requests:
            argv += [lease, cost, "".join(c[0] for c in checks)]
            for _, key, a, b in checks:
                keys.append(key)
                argv += [repr(float(a)) if isinstance(a, float) else a, b]
        return await self.redis.eval(self.admit_body, len(keys), *keys, *argv)

    async def release(
        self, pairs: Sequence[tuple[str, str]] = (), settle: Sequence[tuple[str, float, int, int]] = ()
    ) -> int:
        keys = [k for k, _ in pairs] + [k for k, *_ in settle]
        argv: list[object] = [lease for _, lease in pairs]
        for _, rate, burst, delta in settle:
            argv += [repr(float(rate)), burst, delta]
        return await self.redis.eval(self.release_body, len(keys), *keys, *argv)

    async def level(self, key: str) -> float | None:
        value = await self.redis.hget(key, "tokens")
        return None if value is None else float(value)


@pytest.fixture
def scripts(redis: aioredis.Redis, unique_prefix: str) -> Scripts:
    return Scripts(redis, unique_prefix)


async def test_a_token_bucket_takes_the_cost_and_reports_what_is_left(scripts: Scripts) -> None:
    tk = scripts.tk("key:a")
    [reply] = await scripts.admit(("", 300, [("t", tk, SLOW, 1000)]))
    # Admitted; no request bucket (index 0); token bucket 1 has 700 left, full again in 300 hours.
    assert reply[:6] == [0, 0, 0, 0, 1, 700]
    assert reply[6] == pytest.approx(300 * 3600 * 1000, rel=1e-6)
    assert await scripts.level(tk) == pytest.approx(700, abs=0.01)


async def test_a_cost_that_does_not_fit_refuses_and_spends_nothing_anywhere(scripts: Scripts) -> None:
    key_tk, target_tk, rl = scripts.tk("key:a"), scripts.tk("target:t"), scripts.rl("key:a")
    checks: list[Check] = [("r", rl, SLOW, 5), ("t", key_tk, SLOW, 1000), ("t", target_tk, SLOW, 500)]
    assert (await scripts.admit(("", 400, checks)))[0][0] == 0
    # The target bucket has 100 left: a request of 400 does not fit there; the key keeps its 600.
    [refused] = await scripts.admit(("", 400, checks))
    assert refused[0] == 3
    # The wait is the time to refill the 300 missing tokens.
    assert refused[1] == pytest.approx(300 * 3600 * 1000, rel=1e-3)
    assert await scripts.level(key_tk) == pytest.approx(600, abs=0.01)
    assert await scripts.level(rl) == pytest.approx(4, abs=0.01)


async def test_a_cost_larger_than_the_whole_bucket_is_refused_as_hopeless(scripts: Scripts) -> None:
    tk = scripts.tk("target:small")
    [refused] = await scripts.admit(("", 1001, [("t", tk, 100.0, 1000)]))
    assert refused == [1, -2]
    assert await scripts.level(tk) is None  # nothing written


async def test_the_most_restrictive_bucket_of_each_kind_is_reported(scripts: Scripts) -> None:
    checks: list[Check] = [
        ("r", scripts.rl("key:a"), SLOW, 10),
        ("r", scripts.rl("target:t"), SLOW, 3),
        ("t", scripts.tk("key:a"), SLOW, 5000),
        ("t", scripts.tk("target:t"), SLOW, 800),
        ("c", scripts.cc("target:t"), 4, ""),
    ]
    [reply] = await scripts.admit(("lease-1", 100, checks))
    assert reply[:3] == [0, 2, 2]  # the target's request bucket: 2 of 3 left
    assert reply[4:6] == [4, 700]  # the target's token bucket: 700 of 800 left
    assert reply[3] == pytest.approx(1 * 3600 * 1000, rel=1e-3)
    assert reply[6] == pytest.approx(100 * 3600 * 1000, rel=1e-3)


async def test_requests_without_buckets_still_answer_zero(scripts: Scripts) -> None:
    assert await scripts.admit(("lease-1", 0, [("c", scripts.cc("target:t"), 2, "")])) == [0]


async def test_a_batch_decides_in_order_so_reservations_never_exceed_the_bucket(scripts: Scripts) -> None:
    tk = scripts.tk("target:shared")
    replies = await scripts.admit(*[("", 300, [("t", tk, SLOW, 1000)]) for _ in range(5)])
    assert [r[0] for r in replies] == [0, 0, 0, 1, 1]
    assert await scripts.level(tk) == pytest.approx(100, abs=0.01)


async def test_settlement_refunds_what_was_not_used(scripts: Scripts) -> None:
    tk = scripts.tk("key:a")
    await scripts.admit(("", 400, [("t", tk, SLOW, 1000)]))
    assert await scripts.release(settle=[(tk, SLOW, 1000, 400 - 120)]) == 0
    assert await scripts.level(tk) == pytest.approx(1000 - 120, abs=0.01)


async def test_settlement_charges_beyond_the_reservation_into_debt(scripts: Scripts) -> None:
    tk = scripts.tk("key:a")
    await scripts.admit(("", 900, [("t", tk, SLOW, 1000)]))
    await scripts.release(settle=[(tk, SLOW, 1000, 900 - 1300)])
    assert await scripts.level(tk) == pytest.approx(-300, abs=0.01)
    # In debt, even a request reserving nothing waits until the refill has paid it.
    [refused] = await scripts.admit(("", 0, [("t", tk, SLOW, 1000)]))
    assert refused[0] == 1 and refused[1] == pytest.approx(300 * 3600 * 1000, rel=1e-3)


async def test_a_refund_never_lifts_a_bucket_above_full(scripts: Scripts, redis: aioredis.Redis) -> None:
    tk = scripts.tk("key:a")
    await scripts.admit(("", 10, [("t", tk, SLOW, 1000)]))
    await scripts.release(settle=[(tk, SLOW, 1000, 10)])
    assert not await redis.exists(tk)  # full again is the same as absent
    # A refund to a bucket that expired (full) meanwhile changes nothing either.
    await scripts.release(settle=[(tk, SLOW, 1000, 500)])
    assert not await redis.exists(tk)


async def test_release_and_settlement_share_one_call(scripts: Scripts, redis: aioredis.Redis) -> None:
    cc, tk = scripts.cc("target:t"), scripts.tk("target:t")
    checks: list[Check] = [("t", tk, SLOW, 1000), ("c", cc, 1, "")]
    assert (await scripts.admit(("lease-1", 200, checks)))[0][0] == 0
    assert await scripts.release(pairs=[(cc, "lease-1")], settle=[(tk, SLOW, 1000, 150)]) == 1
    assert await redis.zcard(cc) == 0
    assert await scripts.level(tk) == pytest.approx(950, abs=0.01)


async def test_settled_bucket_expires_once_it_would_be_full(scripts: Scripts, redis: aioredis.Redis) -> None:
    tk = scripts.tk("target:fast")
    await scripts.admit(("", 100, [("t", tk, 1000.0, 1000)]))  # refills 100 tokens in 0.1 s
    await scripts.release(settle=[(tk, 1000.0, 1000, -100)])
    assert 0 < await redis.pttl(tk) <= 1_200 + 1_000


async def test_old_release_layout_without_settlements_still_works(scripts: Scripts) -> None:
    cc = scripts.cc("key:a")
    await scripts.admit(("l1", 0, [("c", cc, 2, "")]), ("l2", 0, [("c", cc, 2, "")]))
    assert await scripts.release(pairs=[(cc, "l1"), (cc, "l2"), (cc, "gone")]) == 2


# admit.lua keeps what one call has read and taken in a cache and writes each key once at the end;
# these pin that the requests of one batch still see each other's claims exactly.


async def test_a_batch_fills_a_semaphore_exactly_and_writes_every_lease(
    scripts: Scripts, redis: aioredis.Redis
) -> None:
    cc, rl = scripts.cc("target:t"), scripts.rl("target:t")
    checks: list[Check] = [("r", rl, SLOW, 10), ("c", cc, 3, "")]
    replies = await scripts.admit(*[(f"l{i}", 0, checks) for i in range(5)])
    assert [r[0] for r in replies] == [0, 0, 0, 2, 2]
    # Each admitted request saw the claims of the ones before it: 9, 8, 7 units left.
    assert [r[2] for r in replies[:3]] == [9, 8, 7]
    assert sorted(await redis.zrange(cc, 0, -1)) == [b"l0", b"l1", b"l2"]
    assert await scripts.level(rl) == pytest.approx(7, abs=0.01)
    assert await redis.pttl(cc) > 30_000


async def test_a_full_semaphore_with_expired_leases_still_admits(
    scripts: Scripts, redis: aioredis.Redis
) -> None:
    cc = scripts.cc("key:a")
    # Two leases that expired long ago fill the limit of 2; the sweep makes room for the batch.
    await redis.zadd(cc, {"old-1": 1, "old-2": 2})
    replies = await scripts.admit(*[(f"l{i}", 0, [("c", cc, 2, "")]) for i in range(3)])
    assert replies[:2] == [0, 0] and replies[2][0] == 1 and replies[2][1] == -1
    assert sorted(await redis.zrange(cc, 0, -1)) == [b"l0", b"l1"]


async def test_a_refused_request_in_a_batch_takes_nothing_from_the_others(scripts: Scripts) -> None:
    tk, cc = scripts.tk("key:a"), scripts.cc("key:a")
    big: list[Check] = [("c", cc, 1, ""), ("t", tk, SLOW, 1000)]
    small: list[Check] = [("t", tk, SLOW, 1000), ("c", cc, 1, "")]
    # In order: 900 tokens fit; 200 more do not (refused at its token check, having taken
    # nothing); 100 fit but the semaphore is full, so the bucket keeps those 100.
    replies = await scripts.admit(("l1", 900, big), ("l2", 200, small), ("l3", 100, small))
    assert replies[0][0] == 0 and replies[1][0] == 1 and replies[2][0] == 2
    assert await scripts.level(tk) == pytest.approx(100, abs=0.01)


async def test_a_large_batch_on_one_semaphore_is_written_in_slices(
    scripts: Scripts, redis: aioredis.Redis
) -> None:
    cc = scripts.cc("target:wide")
    replies = await scripts.admit(*[(f"l{i}", 0, [("c", cc, 10_000, "")]) for i in range(6_000)])
    assert replies == [0] * 6_000
    assert await redis.zcard(cc) == 6_000


async def test_settlements_of_one_bucket_in_one_call_apply_in_order(
    scripts: Scripts, redis: aioredis.Redis
) -> None:
    tk, cc = scripts.tk("key:a"), scripts.cc("key:a")
    await scripts.admit(*[(f"l{i}", 400, [("t", tk, SLOW, 1000), ("c", cc, 5, "")]) for i in range(2)])
    assert await scripts.level(tk) == pytest.approx(200, abs=0.01)
    # A charge into debt, then a refund past full: clamped at full, so the key goes.
    pairs = [(cc, "l0"), (cc, "gone"), (cc, "l1")]
    assert await scripts.release(pairs, [(tk, SLOW, 1000, -500), (tk, SLOW, 1000, 2000)]) == 2
    assert not await redis.exists(tk) and not await redis.exists(cc)
    await scripts.admit(("", 400, [("t", tk, SLOW, 1000)]))
    await scripts.release(settle=[(tk, SLOW, 1000, -100), (tk, SLOW, 1000, 50)])
    assert await scripts.level(tk) == pytest.approx(550, abs=0.01)


async def test_a_large_release_on_one_semaphore_frees_every_lease(
    scripts: Scripts, redis: aioredis.Redis
) -> None:
    cc = scripts.cc("target:wide")
    await redis.zadd(cc, {f"l{i}": 10**13 for i in range(6_000)})
    assert await scripts.release([(cc, f"l{i}") for i in range(6_000)]) == 6_000
    assert not await redis.exists(cc)


async def _expires_in(redis: aioredis.Redis, key: str) -> tuple[int, float]:
    """The key's ttl and what its exp field says is left (both in ms)."""
    seconds, micros = await redis.time()
    exp = float(await redis.hget(key, "exp"))
    return await redis.pttl(key), exp - (seconds * 1000 + micros / 1000)


async def test_a_bucket_always_outlives_its_time_to_full(scripts: Scripts, redis: aioredis.Redis) -> None:
    rl, tk, cc = scripts.rl("key:a"), scripts.tk("key:a"), scripts.cc("key:a")
    # One unit a second, burst 10: each admission adds a second to the time until full, which
    # soon passes the slack the last PEXPIRE gave, so the expiry must grow with it.
    for taken in range(1, 8):
        await scripts.admit(("", 0, [("r", rl, 1.0, 10)]))
        ttl, left = await _expires_in(redis, rl)
        assert ttl >= taken * 1000 - 100
        assert left == pytest.approx(ttl, abs=100)  # exp is the key's real expiry
    # A settlement never shortens the expiry (a key kept longer is a full bucket kept a while);
    # a charge that needs more extends it, and exp still tells the truth.
    await scripts.admit(("l1", 500, [("t", tk, 100.0, 1000), ("c", cc, 2, "")]))
    before, _ = await _expires_in(redis, tk)
    await scripts.release([(cc, "l1")], [(tk, 100.0, 1000, 450)])
    ttl, left = await _expires_in(redis, tk)
    assert before - 200 <= ttl <= before and left == pytest.approx(ttl, abs=100)
    await scripts.release(settle=[(tk, 100.0, 1000, -900)])
    ttl, left = await _expires_in(redis, tk)
    assert ttl >= 9_400 and left == pytest.approx(ttl, abs=100)
