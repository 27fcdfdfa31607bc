"""The limiter's Lua scripts on a real Redis: exactness across clients, leases, script cache, outages.

Every test uses its own key prefix (and hash tag) and deletes its keys afterwards, so runs in
parallel never share a limiter. Timing assertions are only upper bounds ("returns within one
timeout plus slack"), never speed claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from onwards.config.model import ConcurrencyCheck, LimitsSettings, RateCheck
from onwards.limits import LimiterUnavailable, RedisLimiter
from onwards.limits.redis import load_script
from tests.support.processes import free_port

pytestmark = pytest.mark.redis

SLACK_S = 0.5  # allowance for a loaded test machine on top of one redis_timeout_ms


@pytest.fixture
async def redis(redis_url: str, unique_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{unique_prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def make(
    redis_url: str, unique_prefix: str, redis
) -> AsyncIterator[Callable[..., Awaitable[RedisLimiter]]]:
    made: list[RedisLimiter] = []

    async def factory(
        settings: LimitsSettings | None = None, url: str | None = None, **kwargs
    ) -> RedisLimiter:
        settings = settings or LimitsSettings(redis_timeout_ms=2_000)
        limiter = RedisLimiter(url or redis_url, unique_prefix, settings, **kwargs)
        await limiter.start(settings)
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.close()


def codes(decisions) -> list[int]:
    return [200 if d.allowed else 429 for d in decisions]


async def test_concurrent_admits_from_many_clients_are_exact(make) -> None:
    limiters = [await make() for _ in range(5)]
    bucket = RateCheck("target", "target:exact", 0.001, 7)
    decisions = await asyncio.gather(*(limiters[i % 5].admit((bucket,)) for i in range(40)))
    assert not any(d.degraded for d in decisions)
    assert sum(d.allowed for d in decisions) == 7

    semaphore = ConcurrencyCheck("key", "key:exact", 5)
    decisions = await asyncio.gather(*(limiters[i % 5].admit((semaphore,)) for i in range(40)))
    assert not any(d.degraded for d in decisions)
    winners = [d for d in decisions if d.allowed]
    assert len(winners) == 5
    await asyncio.gather(*(limiters[0].release(d.lease) for d in winners))
    decisions = await asyncio.gather(*(limiters[i % 5].admit((semaphore,)) for i in range(40)))
    assert sum(d.allowed for d in decisions) == 5


async def test_all_or_nothing_example(make) -> None:
    limiter = await make()
    key = RateCheck("key", "key:alice", 0.001, 4)
    tight = RateCheck("target", "target:tight", 0.001, 2)
    to_tight = [await limiter.admit((key, tight)) for _ in range(5)]
    to_loose = [await limiter.admit((key,)) for _ in range(3)]  # `loose` is unlimited
    assert codes(to_tight) + codes(to_loose) == [200, 200, 429, 429, 429, 200, 200, 429]
    assert to_tight[2].refused == tight and to_loose[2].refused == key
    assert 0 < to_tight[2].retry_after <= 1000


async def test_fractional_refill_on_the_server_clock(make) -> None:
    limiter = await make()
    bucket = RateCheck("target", "target:frac", 5.0, 1)  # a token every 0.2 s
    assert (await limiter.admit((bucket,))).allowed
    refused = await limiter.admit((bucket,))
    assert not refused.allowed and 0 < refused.retry_after <= 0.2
    await asyncio.sleep(refused.retry_after + 0.05)
    assert (await limiter.admit((bucket,))).allowed


async def test_keys_can_be_inspected_with_redis_cli_commands(make, redis, unique_prefix) -> None:
    limiter = await make()
    held = await limiter.admit(
        (RateCheck("target", "target:gpt-4", 1.0, 3), ConcurrencyCheck("key", "key:premium_user", 2))
    )
    base = f"{unique_prefix}:{{{unique_prefix}}}"
    found = sorted([key async for key in redis.scan_iter(match=f"{base}:*:*")])
    assert found == [f"{base}:cc:key:premium_user".encode(), f"{base}:rl:target:gpt-4".encode()]
    bucket = await redis.hgetall(f"{base}:rl:target:gpt-4")
    assert float(bucket[b"tokens"]) == pytest.approx(2.0, abs=0.05)
    seconds, micros = await redis.time()
    assert float(bucket[b"ts"]) == pytest.approx(seconds * 1000 + micros / 1000, abs=2_000)
    holders = await redis.zrange(f"{base}:cc:key:premium_user", 0, -1, withscores=True)
    assert [lease for lease, _ in holders] == [held.lease.lease_id.encode()]
    assert holders[0][1] == pytest.approx(seconds * 1000 + 30_000, abs=2_000)
    assert (
        0 < await redis.pttl(f"{base}:rl:target:gpt-4") <= 3_000
    )  # until full, plus one to two seconds of slack
    assert 30_000 < await redis.pttl(f"{base}:cc:key:premium_user") <= 32_000


async def test_a_lease_that_is_never_released_expires(make) -> None:
    settings = LimitsSettings(lease_ttl_ms=300, renew_interval_ms=100, redis_timeout_ms=2_000)
    limiter = await make(settings)
    semaphore = ConcurrencyCheck("target", "target:crash", 1)
    assert (await limiter.admit((semaphore,))).allowed  # the "crashed" holder never releases
    assert not (await limiter.admit((semaphore,))).allowed
    await asyncio.sleep(0.4)
    assert (await limiter.admit((semaphore,))).allowed


async def test_renew_keeps_a_long_request_holding_its_permit(make, redis, unique_prefix) -> None:
    settings = LimitsSettings(lease_ttl_ms=400, renew_interval_ms=100, redis_timeout_ms=2_000)
    limiter = await make(settings)
    semaphore = ConcurrencyCheck("target", "target:stream", 1)
    held = await limiter.admit((semaphore,))
    key = f"{unique_prefix}:{{{unique_prefix}}}:cc:target:stream"
    first_expiry = await redis.zscore(key, held.lease.lease_id)
    await asyncio.sleep(0.25)
    await limiter.renew(held.lease)
    assert await redis.zscore(key, held.lease.lease_id) > first_expiry
    await asyncio.sleep(0.25)  # 0.5 s since admission: past the first expiry, not the renewed one
    assert not (await limiter.admit((semaphore,))).allowed
    await limiter.release(held.lease)
    assert await redis.zscore(key, held.lease.lease_id) is None
    assert (await limiter.admit((semaphore,))).allowed


async def test_release_in_one_call_frees_every_semaphore(make) -> None:
    limiter = await make()
    checks = (
        ConcurrencyCheck("key", "key:k", 1),
        ConcurrencyCheck("target", "target:t", 1),
        ConcurrencyCheck("provider", "provider:t:0", 1),
    )
    held = await limiter.admit(checks)
    assert held.lease.limiter_ids == ("key:k", "target:t", "provider:t:0")
    for check in checks:
        assert not (await limiter.admit((check,))).allowed
    await limiter.release(held.lease)
    assert (await limiter.admit(checks)).allowed


async def test_release_soon_frees_the_permit_without_being_awaited(make) -> None:
    limiter = await make()
    checks = (ConcurrencyCheck("target", "target:soon", 1),)
    held = await limiter.admit(checks)
    assert not (await limiter.admit(checks)).allowed
    limiter.release_soon(held.lease)
    # One pipelined connection: the release is written before the next admission, and Redis
    # answers in order, so the permit is free for the very next call with no wait at all.
    assert (await limiter.admit(checks)).allowed


async def test_releases_of_one_iteration_go_out_in_one_write_before_a_yield_returns(
    make, redis, unique_prefix
) -> None:
    limiter = await make()
    checks = (ConcurrencyCheck("target", "target:batch", 10),)
    held = [await limiter.admit(checks) for _ in range(10)]
    assert all(d.allowed for d in held)
    key = f"{unique_prefix}:{{{unique_prefix}}}:cc:target:batch"
    assert await redis.zcard(key) == 10
    protocol = limiter._transport._protocol
    writes: list[bytes] = []
    real = protocol.transport

    class RecordingTransport:
        def write(self, data: bytes) -> None:
            writes.append(data)
            real.write(data)

        def __getattr__(self, name: str):
            return getattr(real, name)

    protocol.transport = RecordingTransport()
    for decision in held:
        limiter.release_soon(decision.lease)
    # Queued, not written: the request path yields once before its last byte.
    assert limiter.releases_pending
    assert writes == []
    await asyncio.sleep(0)
    assert not limiter.releases_pending
    assert len(writes) == 1, writes  # ten releases, one write, one script call
    assert writes[0].count(b"EVALSHA") == 1
    for _ in range(100):
        if await redis.zcard(key) == 0:
            break
        await asyncio.sleep(0.01)
    assert await redis.zcard(key) == 0


async def test_one_batch_decides_mixed_requests_each_for_its_caller(make, redis) -> None:
    limiter = await make()
    tight = (RateCheck("target", "target:tight", 0.001, 3), ConcurrencyCheck("key", "key:k", 100))
    loose = (RateCheck("target", "target:loose", 0.001, 5),)
    calls = [tight if i % 2 else loose for i in range(40)]
    # All 40 admissions are issued in one event-loop iteration, so they travel as one batch.
    decisions = await asyncio.gather(*(limiter.admit(checks) for checks in calls))
    tight_ok = [d for c, d in zip(calls, decisions, strict=True) if c is tight and d.allowed]
    loose_ok = [d for c, d in zip(calls, decisions, strict=True) if c is loose and d.allowed]
    assert (len(tight_ok), len(loose_ok)) == (3, 5)
    assert all(d.lease is not None and d.lease.limiter_ids == ("key:k",) for d in tight_ok)
    assert all(d.lease is None for d in loose_ok)
    refused = [d for d in decisions if not d.allowed]
    assert all(d.refused.limiter_id in ("target:tight", "target:loose") for d in refused)
    assert all(d.retry_after > 0 for d in refused)


async def test_a_batch_survives_script_flush(make, redis) -> None:
    limiter = await make()
    checks = (RateCheck("target", "target:flushed", 0.001, 4),)
    await redis.script_flush()
    decisions = await asyncio.gather(*(limiter.admit(checks) for _ in range(10)))
    assert codes(decisions).count(200) == 4
    assert not any(d.degraded for d in decisions)


async def test_scripts_are_reloaded_after_script_flush(make, redis) -> None:
    limiter = await make()
    bucket = RateCheck("target", "target:flush", 0.001, 3)
    semaphore = ConcurrencyCheck("target", "target:flush", 2)
    assert (await limiter.admit((bucket,))).allowed
    await redis.script_flush()
    held = await limiter.admit((bucket, semaphore))
    assert held.allowed and not held.degraded
    await redis.script_flush()
    await limiter.renew(held.lease)
    await redis.script_flush()
    await limiter.release(held.lease)
    assert limiter.state == "closed"
    shas = [load_script(name).sha for name in ("admit", "release", "renew")]
    assert await redis.script_exists(*shas) == [True, True, True]
    # Three tokens in all: two spent above, and the semaphore is free again.
    assert codes([await limiter.admit((bucket, semaphore)) for _ in range(2)]) == [200, 429]


async def test_reload_that_lowers_burst_clamps_at_next_request(make, redis, unique_prefix) -> None:
    limiter = await make()
    assert (await limiter.admit((RateCheck("target", "target:reload", 0.001, 10),))).allowed
    lowered = RateCheck("target", "target:reload", 0.001, 3)
    assert codes([await limiter.admit((lowered,)) for _ in range(4)]) == [200, 200, 200, 429]
    tokens = await redis.hget(f"{unique_prefix}:{{{unique_prefix}}}:rl:target:reload", "tokens")
    assert float(tokens) < 1


@pytest.mark.parametrize("policy", ["allow", "deny"])
async def test_refused_connection_applies_policy_within_one_timeout(make, policy) -> None:
    errors: list[int] = []
    states: list[str] = []
    settings = LimitsSettings(on_redis_error=policy, redis_timeout_ms=200)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limiter = await make(settings, url=url, on_error=lambda: errors.append(1), on_state_change=states.append)
    assert limiter.state == "open" and not limiter.healthy  # start() found Redis down
    assert states == ["open"]
    errors_before = len(errors)
    bucket = RateCheck("target", "target:down", 1.0, 1)
    for _ in range(3):
        started = time.monotonic()
        if policy == "allow":
            decision = await limiter.admit((bucket,))
            assert decision.allowed and decision.degraded and decision.lease is None
        else:
            with pytest.raises(LimiterUnavailable):
                await limiter.admit((bucket,))
        assert time.monotonic() - started < 0.2 + SLACK_S
    assert len(errors) == errors_before  # the open circuit answered; Redis was not asked


async def _blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Accept the connection, read whatever comes, never answer.
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    writer.close()


async def test_a_silent_redis_costs_at_most_one_timeout(make) -> None:
    server = await asyncio.start_server(_blackhole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = LimitsSettings(redis_timeout_ms=200)
        started = time.monotonic()
        limiter = await make(
            settings, url=f"redis://127.0.0.1:{port}/0", cooldown_s=30.0, max_cooldown_s=30.0
        )
        assert time.monotonic() - started < 0.2 + SLACK_S
        assert limiter.state == "open"
        started = time.monotonic()
        decision = await limiter.admit((RateCheck("target", "target:silent", 1.0, 1),))
        assert decision.degraded
        assert time.monotonic() - started < 0.2 + SLACK_S
    finally:
        server.close()
        await server.wait_closed()


async def test_breaker_closes_when_redis_comes_back(make, redis_url) -> None:
    target = urlsplit(redis_url)
    if target.scheme != "redis" or not target.hostname:
        pytest.skip("needs a TCP Redis URL to put a relay in front of")
    upstream_host, upstream_port = target.hostname or "127.0.0.1", target.port or 6379
    port = free_port()
    states: list[str] = []
    settings = LimitsSettings(redis_timeout_ms=500)
    url = f"redis://127.0.0.1:{port}{target.path or '/0'}"
    limiter = await make(
        settings, url=url, on_state_change=states.append, cooldown_s=0.05, max_cooldown_s=0.2
    )
    bucket = RateCheck("target", "target:back", 0.001, 2)
    assert (await limiter.admit((bucket,))).degraded
    assert states == ["open"]

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port)  # Redis "comes back"
    try:
        deadline = time.monotonic() + 5
        while limiter.state != "closed":
            assert time.monotonic() < deadline, "breaker did not close"
            await asyncio.sleep(0.02)
        assert states == ["open", "closed"]
        assert codes([await limiter.admit((bucket,)) for _ in range(3)]) == [200, 200, 429]
        await limiter.close()  # drop the relayed connections before the relay stops
    finally:
        server.close()
        await server.wait_closed()


async def test_an_extremely_slow_rate_still_gets_a_valid_expiry(make, redis, unique_prefix) -> None:
    limiter = await make()
    glacial = RateCheck("target", "target:glacial", 1e-12, 1_000_000)
    assert (await limiter.admit((glacial,))).allowed
    pttl = await redis.pttl(f"{unique_prefix}:{{{unique_prefix}}}:rl:target:glacial")
    assert 0 < pttl <= 10**12
