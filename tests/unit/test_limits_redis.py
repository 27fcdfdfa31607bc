"""RedisLimiter against fakeredis: key layout, script cache recovery, failure policy and breaker."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from onwards.config.model import ConcurrencyCheck, LimitsSettings, RateCheck
from onwards.limits import LimiterUnavailable, RedisLimiter
from onwards.limits.base import Lease
from onwards.limits.redis import load_script, redact_url
from tests.support.redis_fake import FakeRedisTransport

BUCKET = RateCheck("target", "target:gpt-4", 2.0, 5)
SEMAPHORE = ConcurrencyCheck("key", "key:premium_user", 3)
DEFAULTS = LimitsSettings()


class Events:
    def __init__(self) -> None:
        self.states: list[str] = []
        self.errors = 0

    def state(self, state: str) -> None:
        self.states.append(state)

    def error(self) -> None:
        self.errors += 1


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def fake_client(server: fakeredis.FakeServer) -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis(server=server, retry=Retry(NoBackoff(), 0))


def fake_transport(server: fakeredis.FakeServer) -> FakeRedisTransport:
    """The limiter's transport over fakeredis; `commands` tells requests from probes."""
    return FakeRedisTransport(client=fake_client(server))


@pytest.fixture
async def events() -> Events:
    return Events()


@pytest.fixture
async def make(server, events) -> AsyncIterator:
    made: list[RedisLimiter] = []

    async def factory(settings: LimitsSettings = DEFAULTS, **kwargs) -> RedisLimiter:
        kwargs.setdefault("prefix", "onwards")
        kwargs.setdefault("transport", fake_transport(server))
        limiter = RedisLimiter(
            on_state_change=events.state,
            on_error=events.error,
            cooldown_s=0.02,
            max_cooldown_s=0.05,
            **kwargs,
        )
        await limiter.start(settings)
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.close()


async def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_keys_follow_the_documented_layout(make, server) -> None:
    limiter = await make()
    decision = await limiter.admit((BUCKET, SEMAPHORE))
    redis = fake_client(server)
    assert sorted(await redis.keys("*")) == [
        b"onwards:{onwards}:cc:key:premium_user",
        b"onwards:{onwards}:epoch",  # the data-loss marker (recovery.py)
        b"onwards:{onwards}:rl:target:gpt-4",
    ]
    bucket = await redis.hgetall("onwards:{onwards}:rl:target:gpt-4")
    assert set(bucket) == {b"tokens", b"ts", b"exp"}
    assert float(bucket[b"tokens"]) == pytest.approx(4.0, abs=0.01)
    assert float(bucket[b"ts"]) == pytest.approx(time.time() * 1000, abs=5_000)
    holders = await redis.zrange("onwards:{onwards}:cc:key:premium_user", 0, -1, withscores=True)
    assert [member for member, _ in holders] == [decision.lease.lease_id.encode()]
    assert holders[0][1] == pytest.approx(time.time() * 1000 + 30_000, abs=5_000)


async def test_keys_expire_so_idle_limiters_vanish(make, server) -> None:
    limiter = await make()
    await limiter.admit((BUCKET, SEMAPHORE))
    redis = fake_client(server)
    # One token short refills in 0.5 s at 2/s; the slack keeps it around a little longer.
    bucket_ttl = await redis.pttl("onwards:{onwards}:rl:target:gpt-4")
    assert 1_500 < bucket_ttl <= 2_500  # plus one to two seconds of slack
    semaphore_ttl = await redis.pttl("onwards:{onwards}:cc:key:premium_user")
    assert 30_000 < semaphore_ttl <= 32_000  # the lease ttl plus one to two seconds of slack


async def test_prefix_and_hash_tag_are_configurable(make, server) -> None:
    limiter = await make(prefix="gw2", hash_tag="shared")
    await limiter.admit((BUCKET,))
    assert sorted(await fake_client(server).keys("*")) == [
        b"gw2:{shared}:epoch",
        b"gw2:{shared}:rl:target:gpt-4",
    ]
    assert "gw2:{shared}" in limiter.description


async def test_scripts_come_back_after_script_flush(make, server) -> None:
    limiter = await make()
    redis = fake_client(server)
    shas = [load_script(name).sha for name in ("admit", "release", "renew")]
    assert await redis.script_exists(*shas) == [True, True, True]
    await redis.script_flush()
    decision = await limiter.admit((BUCKET, SEMAPHORE))
    assert decision.allowed and not decision.degraded
    assert await redis.script_exists(*shas) == [True, True, True]
    assert limiter.state == "closed"
    await redis.script_flush()
    await limiter.release(decision.lease)
    assert await redis.zcard("onwards:{onwards}:cc:key:premium_user") == 0


async def test_renew_moves_the_expiry_and_release_removes_the_lease(make, server) -> None:
    limiter = await make(LimitsSettings(lease_ttl_ms=60_000, renew_interval_ms=20_000))
    decision = await limiter.admit((SEMAPHORE,))
    key = "onwards:{onwards}:cc:key:premium_user"
    redis = fake_client(server)
    await redis.zadd(key, {decision.lease.lease_id: 1}, xx=True)  # as if about to expire
    await limiter.renew(decision.lease)
    score = await redis.zscore(key, decision.lease.lease_id)
    assert score == pytest.approx(time.time() * 1000 + 60_000, abs=5_000)
    await limiter.release(decision.lease)
    assert await redis.zscore(key, decision.lease.lease_id) is None


async def test_encoded_arguments_are_reused_per_checks_tuple(make) -> None:
    limiter = await make()
    checks = (BUCKET, SEMAPHORE)
    await limiter.admit(checks)
    plan = limiter._encoder.plans[checks]
    await limiter.admit((BUCKET, SEMAPHORE))  # an equal tuple finds the same plan
    assert limiter._encoder.plans[checks] is plan
    assert len(limiter._encoder.plans) == 1
    limiter.configure(LimitsSettings(lease_ttl_ms=5_000, renew_interval_ms=1_000))
    assert limiter._encoder.plans == {}
    decision = await limiter.admit(checks)
    assert decision.lease.ttl_ms == 5_000


async def test_unreachable_redis_with_allow_policy_degrades_and_breaker_opens(
    make, server, events, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="onwards.limits")
    limiter = await make()
    assert limiter.healthy
    server.connected = False
    first = await limiter.admit((BUCKET, SEMAPHORE))
    assert first.allowed and first.degraded and first.lease is None
    assert limiter.state == "open" and not limiter.healthy
    assert events.states == ["open"]
    assert events.errors >= 1
    # While open, requests do not touch Redis (only the background probe does): the policy answers.
    transport = limiter._transport
    evalshas = transport.commands.count("EVALSHA")
    for _ in range(20):
        decision = await limiter.admit((BUCKET,))
        assert decision.allowed and decision.degraded
    assert transport.commands.count("EVALSHA") == evalshas
    server.connected = True
    await wait_for(lambda: limiter.state == "closed")
    assert events.states == ["open", "closed"]
    decision = await limiter.admit((BUCKET,))
    assert decision.allowed and not decision.degraded
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "circuit open" in warnings[0].getMessage()
    assert len(infos) == 1 and "circuit closed" in infos[0].getMessage()


async def test_unreachable_redis_with_deny_policy_raises(make, server, events) -> None:
    limiter = await make(LimitsSettings(on_redis_error="deny"))
    server.connected = False
    with pytest.raises(LimiterUnavailable, match="on_redis_error is deny"):
        await limiter.admit((BUCKET,))
    assert limiter.state == "open"
    with pytest.raises(LimiterUnavailable):
        await limiter.admit((BUCKET,))
    # Deny applies to any request with limits; one without limits needs no Redis.
    assert (await limiter.admit(())).allowed


async def test_probe_keeps_failing_while_redis_stays_down(make, server, events) -> None:
    limiter = await make()
    server.connected = False
    await limiter.admit((BUCKET,))
    await wait_for(lambda: events.errors >= 4)  # the first failure plus probes
    assert limiter.state == "open"
    assert events.states == ["open"]


async def test_start_with_redis_down_serves_under_policy_then_recovers(make, server, events) -> None:
    server.connected = False
    limiter = await make()
    assert limiter.state == "open"
    assert (await limiter.admit((BUCKET,))).degraded
    server.connected = True
    await wait_for(lambda: limiter.state == "closed")
    decision = await limiter.admit((BUCKET, SEMAPHORE))
    assert decision.allowed and not decision.degraded and decision.lease is not None


class HangingTransport:
    """A Redis that accepts commands and never answers."""

    def __init__(self) -> None:
        self.calls = 0
        self.on_change = None
        self.on_connect = None
        self.connect_timeout = 1.0
        self.connected = True

    def stuck_for(self) -> float:
        return 0.0

    async def check_owner(self) -> None:
        return None

    def redirected(self, exc) -> None:
        pass

    def send_now(self, commands: list[bytes]):
        self.calls += len(commands)
        loop = asyncio.get_running_loop()
        return [loop.create_future() for _ in commands]

    async def execute_packed(self, packed: bytes):
        self.calls += 1
        await asyncio.Event().wait()

    async def execute_command(self, *args):
        return await self.execute_packed(b"")

    def abort(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_a_hanging_redis_costs_a_request_at_most_one_timeout(events) -> None:
    client = HangingTransport()
    limiter = RedisLimiter(transport=client, on_error=events.error, cooldown_s=5.0, max_cooldown_s=5.0)
    settings = LimitsSettings(redis_timeout_ms=100)
    started = time.monotonic()
    await limiter.start(settings)  # script loading times out: served under the policy from now on
    assert time.monotonic() - started < 0.1 + 0.5
    assert limiter.state == "open"
    await limiter.close()

    limiter = RedisLimiter(transport=client, on_error=events.error, cooldown_s=5.0, max_cooldown_s=5.0)
    limiter.configure(settings)
    for _ in range(2):
        started = time.monotonic()
        decision = await limiter.admit((BUCKET,))
        assert time.monotonic() - started < 0.1 + 0.5
        assert decision.degraded
    # One timeout alone leaves the circuit closed (one slow batch must not switch limits off for
    # everyone); the second in a row opens it.
    assert limiter.state == "open"
    calls = client.calls
    await limiter.admit((BUCKET,))
    assert client.calls == calls  # the open circuit kept the third request away from Redis
    await limiter.close()


async def test_release_and_renew_never_raise(make, server, events) -> None:
    limiter = await make()
    decision = await limiter.admit((SEMAPHORE,))
    server.connected = False
    before = events.errors
    await limiter.renew(decision.lease)
    await limiter.release(decision.lease)
    assert events.errors == before + 1  # the renew failed and opened the circuit; release skipped Redis
    assert limiter.state == "open"
    await limiter.release(Lease("x", (), 1000))  # nothing to release


async def test_a_damaged_key_applies_the_policy_without_opening_the_circuit(make, server, events) -> None:
    limiter = await make()
    await fake_client(server).set("onwards:{onwards}:rl:target:gpt-4", "not a hash")
    decision = await limiter.admit((BUCKET,))
    assert decision.allowed and decision.degraded
    assert limiter.state == "closed"
    assert events.errors == 1
    other = RateCheck("target", "target:other", 1.0, 1)
    assert not (await limiter.admit((other,))).degraded


async def test_hooks_that_raise_do_not_break_admission(server) -> None:
    def boom(*args) -> None:
        raise RuntimeError("metrics broke")

    limiter = RedisLimiter(
        transport=fake_transport(server),
        on_error=boom,
        on_state_change=boom,
        cooldown_s=5.0,
        max_cooldown_s=5.0,
    )
    await limiter.start(LimitsSettings())
    server.connected = False
    assert (await limiter.admit((BUCKET,))).degraded
    assert limiter.state == "open"
    await limiter.close()


async def test_unique_lease_ids(make) -> None:
    limiter = await make()
    big = ConcurrencyCheck("target", "target:big", 1000)
    ids = {(await limiter.admit((big,))).lease.lease_id for _ in range(200)}
    assert len(ids) == 200


def test_constructor_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        RedisLimiter()
    with pytest.raises(ValueError, match="redis://"):
        RedisLimiter("http://localhost:6379")
    with pytest.raises(ValueError, match="on_redis_error"):
        RedisLimiter("redis://localhost", settings=LimitsSettings(on_redis_error="maybe"))  # type: ignore[arg-type]


def test_redact_url_drops_credentials() -> None:
    assert redact_url("redis://user:s3cret@cache.internal:6380/2") == "redis://user:***@cache.internal:6380/2"
    assert redact_url("rediss://:pw@[::1]:6379") == "rediss://:***@[::1]:6379"
    limiter = RedisLimiter("redis://:hunter2@localhost:6379/0", prefix=f"p{uuid.uuid4().hex[:6]}")
    assert "hunter2" not in limiter.description
