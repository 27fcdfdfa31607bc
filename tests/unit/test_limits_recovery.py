"""The limiter's fault handling on the fakeredis transport: owed releases, re-registration, one timeout."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from onwards.config.model import ConcurrencyCheck, LimitsSettings
from onwards.limits import RedisLimiter
from onwards.limits.keys import KeySpace
from onwards.limits.redis import batcher as batcher_module
from onwards.limits.redis.errors import RedirectError, RedisMisconfigured, misconfiguration
from onwards.limits.redis.locate import hash_slot
from tests.support.redis_fake import FakeRedisTransport

SEMAPHORE = ConcurrencyCheck("target", "target:r", 3)
KEY = "onwards:{onwards}:cc:target:r"


def test_hash_slot_matches_redis_cluster() -> None:
    # The values `CLUSTER KEYSLOT` gives (Redis Cluster specification).
    assert hash_slot("foo") == 12182
    assert hash_slot("somekey") == 11058
    assert hash_slot("foo{hash_tag}") == 2515
    # Every key of one gateway shares the slot of its tag.
    keys = KeySpace("gw", "tag")
    assert {hash_slot(keys.bucket("a")), hash_slot(keys.semaphore("b{c}")), hash_slot("{tag}")} == {
        hash_slot("tag")
    }


def test_redirects_name_their_node_and_misconfigurations_are_told_apart() -> None:
    assert RedirectError("MOVED 3999 127.0.0.1:6381").address == ("127.0.0.1", 6381)
    assert RedirectError("ASK 3999 [::1]:7000").address == ("::1", 7000)
    assert RedirectError("READONLY You can't write against a read only replica.").address is None
    assert misconfiguration(RedisMisconfigured("x is a Redis Sentinel")) == "x is a Redis Sentinel"
    assert misconfiguration(AuthenticationError("WRONGPASS invalid")) == "WRONGPASS invalid"
    assert misconfiguration(ResponseError("ERR SELECT is not allowed in cluster mode")) is not None
    assert misconfiguration(ConnectionError("refused")) is None
    assert misconfiguration(TimeoutError()) is None


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def limiter(server):
    transport = FakeRedisTransport(server)
    limiter = RedisLimiter(transport=transport, cooldown_s=0.01, max_cooldown_s=0.02)
    await limiter.start(LimitsSettings())
    yield limiter
    await limiter.close()


async def zcard(server: fakeredis.FakeServer) -> int:
    client = fakeredis.FakeAsyncRedis(server=server)
    try:
        return await client.zcard(KEY)
    finally:
        await client.aclose()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_releases_while_the_circuit_is_open_are_kept_and_sent_when_it_closes(server, limiter) -> None:
    held = [await limiter.admit((SEMAPHORE,)) for _ in range(3)]
    server.connected = False
    assert (await limiter.admit((SEMAPHORE,))).degraded
    assert limiter.state == "open"
    for decision in held:
        limiter.release_soon(decision.lease)
    # The three releases, and the failed admission's lease (Redis may have run it).
    assert limiter.releases_owed == 4
    server.connected = True
    for _ in range(200):
        if limiter.state == "closed" and limiter.releases_owed == 0:
            break
        await asyncio.sleep(0.01)
    await settle()
    assert limiter.releases_owed == 0
    assert await zcard(server) == 0


async def test_the_owed_list_is_bounded_and_counts_what_it_drops(server, monkeypatch) -> None:
    monkeypatch.setattr(batcher_module, "MAX_OWED", 4)
    counted: list[tuple[str, int]] = []
    limiter = RedisLimiter(
        transport=FakeRedisTransport(server), on_deferred=lambda r, n: counted.append((r, n))
    )
    await limiter.start(LimitsSettings())
    try:
        big = ConcurrencyCheck("target", "target:big", 100)
        held = [await limiter.admit((big,)) for _ in range(6)]
        server.connected = False
        assert (await limiter.admit((big,))).degraded
        for decision in held:
            limiter.release_soon(decision.lease)
        assert limiter.releases_owed == 4
        assert counted.count(("kept", 1)) == 7  # six releases and the failed admission's lease
        assert counted.count(("dropped", 1)) == 3
    finally:
        await limiter.close()


async def test_a_lost_data_set_gets_the_held_leases_back_before_the_next_admission(server, limiter) -> None:
    held = [await limiter.admit((SEMAPHORE,)) for _ in range(3)]
    assert all(d.allowed for d in held)
    client = fakeredis.FakeAsyncRedis(server=server)
    await client.flushall()  # what a restart without persistence leaves
    await client.script_flush()
    await client.aclose()
    limiter._transport.abort()  # the restart cut the connection
    # The next admission travels behind the greeting on the new connection: the limit is full.
    decision = await limiter.admit((SEMAPHORE,))
    assert not decision.allowed and not decision.degraded
    assert await zcard(server) == 3
    for d in held:
        limiter.release_soon(d.lease)
    await settle()
    assert await zcard(server) == 0


async def test_a_release_lost_with_the_old_connection_is_repeated_on_the_new_one(server, limiter) -> None:
    held = await limiter.admit((SEMAPHORE,))
    # As if the release had gone to an old master that a failover then replaced: Redis still
    # has the lease, the worker believes it gave it back.
    limiter._book.drop(held.lease.lease_id, held.lease.limiter_ids)
    assert await zcard(server) == 1
    limiter._transport.abort()
    assert (await limiter.admit((SEMAPHORE,))).allowed  # a new connection, greeted first
    assert await zcard(server) == 1  # the old lease is gone, the new one is in


class OneSlowBatch(FakeRedisTransport):
    """The first EVALSHA batch never gets an answer; everything after is normal."""

    def __init__(self, server: fakeredis.FakeServer) -> None:
        super().__init__(server)
        self.swallowed = 0

    def send_now(self, commands):
        if self.swallowed == 0 and any(b"EVALSHA" in c for c in commands):
            self.swallowed = 1
            loop = asyncio.get_running_loop()
            return [loop.create_future() for _ in commands]
        return super().send_now(commands)


async def test_one_timeout_under_load_does_not_open_the_circuit_when_the_next_call_succeeds(server) -> None:
    states: list[str] = []
    limiter = RedisLimiter(transport=OneSlowBatch(server), on_state_change=states.append)
    settings = LimitsSettings(redis_timeout_ms=50)
    await limiter.start(settings)
    try:
        slow = await asyncio.gather(*(limiter.admit((SEMAPHORE,)) for _ in range(5)))
        assert all(d.degraded for d in slow)
        assert limiter.state == "closed" and states == []
        decision = await limiter.admit((SEMAPHORE,))
        assert decision.allowed and not decision.degraded
        assert limiter.state == "closed"
    finally:
        await limiter.close()
