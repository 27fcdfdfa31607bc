"""The limiter on real Redis topologies: Sentinel (failover) and Cluster (seeds, MOVED, failover, migration).

Everything runs on private processes on loopback ports in a temporary directory (see
tests/support/redis_topologies.py). Exactness is asserted by counts; recovery by polling for the
first decision Redis made again, measured from the moment the failover finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import pytest
import redis

from onwards.config.model import ConcurrencyCheck, LimitsSettings, RateCheck
from onwards.config.sources.redis import RedisFollower, push_config, read_stored
from onwards.limits import RedisLimiter
from onwards.limits.redis.check import redis_url_problem
from onwards.limits.redis.locate import hash_slot
from tests.support.redis_topologies import cluster_setup, sentinel_setup

pytestmark = [pytest.mark.redis, pytest.mark.integration, pytest.mark.slow]

SETTINGS = LimitsSettings(redis_timeout_ms=500)
LIMIT = 4
SEMAPHORE = ConcurrencyCheck("target", "target:topo", LIMIT)
BUCKET = RateCheck("target", "target:topo", 0.001, 6)


CONFIG = b'{"targets": {"m": {"url": "http://127.0.0.1:9/v1"}}}'


async def config_round_trip(url: str, prefix: str) -> None:
    """`onwards config push/show` and the config follower work with the same URL as the limiter."""
    pushed = await push_config(url, prefix, CONFIG, "topology.json")
    stored = await read_stored(url, prefix)
    assert (stored.version, stored.body) == (pushed.version, CONFIG)
    applied: list[str] = []
    follower = RedisFollower(url, prefix, stored.version, recheck_secs=30)
    task = asyncio.create_task(follower.run(lambda snapshot: applied.append(snapshot.version), print))
    try:
        second = CONFIG.replace(b"9/v1", b"10/v1")
        deadline = time.monotonic() + 10
        # Pushed until the follower is subscribed and hears it (the first push may come too early).
        while not applied:
            assert time.monotonic() < deadline, "the follower never applied a push"
            await push_config(url, prefix, second, "topology.json")
            for _ in range(25):
                if applied:
                    break
                await asyncio.sleep(0.02)
        assert applied[-1].startswith("v")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def exact(limiter: RedisLimiter) -> list:
    """Fill the semaphore: LIMIT admitted by Redis, the next refused by Redis."""
    decisions = [await limiter.admit((SEMAPHORE,)) for _ in range(LIMIT + 1)]
    assert [(d.allowed, d.degraded) for d in decisions] == [(True, False)] * LIMIT + [(False, False)]
    return decisions[:LIMIT]


# The bounds, measured from the event; asserted with room for a loaded two-core machine
# (a regression such as a probe back-off that doubles to seconds still fails them).
SLACK = 2.5


async def resumed_within(limiter: RedisLimiter, bound: float) -> float:
    started = time.monotonic()
    probe = ConcurrencyCheck("target", "target:probe", 10_000)
    while True:
        decision = await limiter.admit((probe,))
        if decision.allowed and not decision.degraded:
            await limiter.release(decision.lease)
            return time.monotonic() - started
        assert time.monotonic() - started < bound, f"limiting did not resume within {bound}s"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("sentinels", [1, 3])
async def test_sentinel_finds_the_master_and_follows_a_failover_under_load(
    tmp_path: Path, unique_prefix: str, sentinels: int
) -> None:
    with sentinel_setup(tmp_path, sentinels) as setup:
        assert await asyncio.to_thread(redis_url_problem, setup.url, unique_prefix) is None
        await config_round_trip(setup.url, unique_prefix)
        limiter = RedisLimiter(setup.url, unique_prefix, SETTINGS)
        await limiter.start(SETTINGS)
        try:
            held = await exact(limiter)
            for decision in held:
                await limiter.release(decision.lease)
            stop = asyncio.Event()
            outcomes: list[tuple[bool, bool]] = []

            async def load() -> None:
                while not stop.is_set():
                    decision = await limiter.admit((SEMAPHORE,))
                    outcomes.append((decision.allowed, decision.degraded))
                    if decision.lease is not None:
                        limiter.release_soon(decision.lease)
                    await asyncio.sleep(0.005)

            running = asyncio.create_task(load())
            new_master = await asyncio.to_thread(setup.failover)
            finished = time.monotonic()
            assert new_master == setup.replica.port
            await resumed_within(limiter, 1.0 * SLACK)  # +switch-master moves the worker at once
            took = time.monotonic() - finished
            stop.set()
            await running
            assert outcomes, "no load ran during the failover"
            assert took < (1.0 + 0.1) * SLACK
            await asyncio.sleep(0)  # let the last release go out

            # Exact again on the new master: the load's permits all came back.
            async def zero() -> bool:
                with redis.Redis(port=new_master) as direct:
                    return direct.zcard(f"{unique_prefix}:{{{unique_prefix}}}:cc:target:topo") == 0

            deadline = time.monotonic() + 2
            while not await zero():
                assert time.monotonic() < deadline, "permits of the load were not released"
                await asyncio.sleep(0.02)
            await exact(limiter)
        finally:
            await limiter.close()


async def test_cluster_keys_live_in_one_slot_on_its_owner_and_a_failover_is_followed(
    tmp_path: Path, unique_prefix: str
) -> None:
    with cluster_setup(tmp_path, replicas=1) as cluster:
        slot = hash_slot("{" + unique_prefix + "}")
        owner = cluster.owner_port(slot)
        seed = next(n for n in cluster.nodes if n.port != owner)  # a node that does not own the slot
        url = cluster.url(seed)
        assert await asyncio.to_thread(redis_url_problem, url, unique_prefix) is None
        await config_round_trip(url, unique_prefix)
        limiter = RedisLimiter(url, unique_prefix, SETTINGS)
        await limiter.start(SETTINGS)
        try:
            held = await exact(limiter)
            assert [(await limiter.admit((BUCKET,))).allowed for _ in range(8)] == [True] * 6 + [False] * 2
            with redis.Redis(port=owner) as direct:
                keys = sorted(direct.keys(f"{unique_prefix}:*"))
            assert keys == [
                f"{unique_prefix}:{{{unique_prefix}}}:cc:target:topo".encode(),
                f"{unique_prefix}:{{{unique_prefix}}}:config".encode(),  # config too: one slot
                f"{unique_prefix}:{{{unique_prefix}}}:epoch".encode(),
                f"{unique_prefix}:{{{unique_prefix}}}:rl:target:topo".encode(),
            ]
            new_owner = await asyncio.to_thread(cluster.failover, slot)
            finished = time.monotonic()
            assert new_owner != owner
            await resumed_within(limiter, 1.0 * SLACK)
            assert time.monotonic() - finished < 1.5 * SLACK
            # The leases were replicated: still full, and exact after the releases.
            assert not (await limiter.admit((SEMAPHORE,))).allowed
            for decision in held:
                await limiter.release(decision.lease)
            await exact(limiter)
        finally:
            await limiter.close()


async def test_a_plain_redis_url_to_a_cluster_node_is_used_as_a_seed(
    tmp_path: Path, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="onwards.limits")
    with cluster_setup(tmp_path, replicas=0) as cluster:
        slot = hash_slot("{" + unique_prefix + "}")
        seed = next(n for n in cluster.nodes if n.port != cluster.owner_port(slot))
        await config_round_trip(f"redis://127.0.0.1:{seed.port}", unique_prefix)
        limiter = RedisLimiter(f"redis://127.0.0.1:{seed.port}", unique_prefix, SETTINGS)
        await limiter.start(SETTINGS)
        try:
            assert limiter.state == "closed" and limiter.problem is None
            await exact(limiter)
            assert any("using it as a cluster seed" in r.getMessage() for r in caplog.records)
        finally:
            await limiter.close()
        problem = await asyncio.to_thread(
            redis_url_problem, f"redis://127.0.0.1:{seed.port}/1", unique_prefix
        )
        assert problem is not None and "Redis Cluster has only db 0" in problem


async def test_sentinel_failover_away_from_a_frozen_master_is_followed_within_a_second(
    tmp_path: Path, unique_prefix: str
) -> None:
    # The master stops answering without closing anything (SIGSTOP: a host that vanished); the
    # Sentinel promotes the replica by itself. The limiter must not wait for its silent connection.
    with sentinel_setup(tmp_path) as setup:
        limiter = RedisLimiter(setup.url, unique_prefix, SETTINGS)
        await limiter.start(SETTINGS)
        old = setup.master_port()
        try:
            held = await exact(limiter)
            setup.master.send_signal(19)  # SIGSTOP
            try:
                assert (await limiter.admit((SEMAPHORE,))).degraded
                started = time.monotonic()
                while setup.master_port() == old:
                    assert time.monotonic() - started < 30, "the Sentinel did not fail over"
                    await asyncio.sleep(0.05)
                await resumed_within(limiter, 1.0 * SLACK)
            finally:
                setup.master.send_signal(18)  # SIGCONT, so it can be stopped
            # The held leases were put back on the new master before anything else was admitted.
            assert not (await limiter.admit((SEMAPHORE,))).allowed
            for decision in held:
                await limiter.release(decision.lease)
            await exact(limiter)
        finally:
            await limiter.close()


async def test_cluster_failover_away_from_a_frozen_master_that_is_the_first_seed(
    tmp_path: Path, unique_prefix: str
) -> None:
    # The owner of the gateway's slot stops answering (SIGSTOP) and is the first node of the URL;
    # the cluster promotes its replica after cluster-node-timeout. Lookups must not wait on it.
    with cluster_setup(tmp_path, replicas=1) as cluster:
        slot = hash_slot("{" + unique_prefix + "}")
        owner = cluster.node(cluster.owner_port(slot))
        others = [n for n in cluster.nodes if n is not owner]
        limiter = RedisLimiter(cluster.url(owner, *others), unique_prefix, SETTINGS)
        await limiter.start(SETTINGS)
        try:
            held = await exact(limiter)
            owner.send_signal(19)  # SIGSTOP
            try:
                assert (await limiter.admit((SEMAPHORE,))).degraded
                survivor = others[0]

                def new_owner() -> int | None:
                    with redis.Redis(port=survivor.port, socket_timeout=1) as client:
                        for first, last, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                            if first <= slot <= last and int(master[1]) != owner.port:
                                return int(master[1])
                    return None

                started = time.monotonic()
                while await asyncio.to_thread(new_owner) is None:
                    assert time.monotonic() - started < 30, "the cluster did not fail over"
                    await asyncio.sleep(0.05)
                await resumed_within(limiter, 1.0 * SLACK)
            finally:
                owner.send_signal(18)  # SIGCONT
            assert not (await limiter.admit((SEMAPHORE,))).allowed  # the held leases are still counted
            for decision in held:
                await limiter.release(decision.lease)
            await exact(limiter)
        finally:
            await limiter.close()


def _migrate(source: int, target: int, keys: list[bytes]) -> None:
    with redis.Redis(port=source) as direct:
        direct.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)


async def test_cluster_slot_migration_follows_ask_then_moved_and_stays_exact(
    tmp_path: Path, unique_prefix: str
) -> None:
    # The gateway's slot moves to another master the way `redis-cli --cluster reshard` does it:
    # SETSLOT IMPORTING/MIGRATING, keys moved one MIGRATE at a time, then SETSLOT NODE everywhere.
    with cluster_setup(tmp_path, replicas=0) as cluster:
        slot = hash_slot("{" + unique_prefix + "}")
        owner = cluster.owner_port(slot)
        target = next(n.port for n in cluster.nodes if n.port != owner)
        ids = {}
        for node in cluster.nodes:
            with redis.Redis(port=node.port) as direct:
                ids[node.port] = direct.execute_command("CLUSTER", "MYID").decode()
        semaphore_key = f"{unique_prefix}:{{{unique_prefix}}}:cc:target:topo".encode()
        # A generous timeout (a safety net): the first ASK opens a connection to the importing node.
        settings = LimitsSettings(redis_timeout_ms=3000)
        limiter = RedisLimiter(cluster.url(), unique_prefix, settings)
        await limiter.start(settings)
        try:
            held = [await limiter.admit((SEMAPHORE,)) for _ in range(2)]
            assert [(d.allowed, d.degraded) for d in held] == [(True, False)] * 2
            bucket = [await limiter.admit((BUCKET,)) for _ in range(3)]
            assert [(d.allowed, d.degraded) for d in bucket] == [(True, False)] * 3
            other = RateCheck("target", "target:other", 0.001, 100)
            assert (await limiter.admit((other,))).allowed

            with redis.Redis(port=target) as direct:
                direct.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
            with redis.Redis(port=owner) as direct:
                direct.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
            # The semaphore (with its two leases) moves; the bucket stays on the owner for now.
            await asyncio.to_thread(_migrate, owner, target, [semaphore_key])

            # The semaphore's calls get ASK from the owner and run on the importing node: of five
            # at once (one batch, one script call there), two get the last permits, three are
            # refused by Redis; the bucket's calls still run on the owner.
            burst = await asyncio.gather(*(limiter.admit((SEMAPHORE,)) for _ in range(5)))
            assert (
                sorted((d.allowed, d.degraded) for d in burst) == [(False, False)] * 3 + [(True, False)] * 2
            )
            more = [d for d in burst if d.allowed]
            rest = [await limiter.admit((BUCKET,)) for _ in range(4)]
            assert [(d.allowed, d.degraded) for d in rest] == [(True, False)] * 3 + [(False, False)]
            with redis.Redis(port=target) as direct:
                direct.execute_command("ASKING")
                assert direct.zcard(semaphore_key) == LIMIT
            # A release goes the same way; the freed permit is taken again, exactly once.
            await limiter.release(more[0].lease)
            again = [await limiter.admit((SEMAPHORE,)) for _ in range(2)]
            assert [(d.allowed, d.degraded) for d in again] == [(True, False), (False, False)]
            # A call whose keys are split between the nodes gets TRYAGAIN, is repeated once after a
            # short pause, and then gets the policy (the default: allow, degraded); nothing is held.
            split = await limiter.admit((SEMAPHORE, other))
            assert (split.allowed, split.degraded, split.lease) == (True, True, None)
            with redis.Redis(port=target) as direct:
                direct.execute_command("ASKING")
                assert direct.zcard(semaphore_key) == LIMIT
            assert [(d.allowed, d.degraded) for d in [await limiter.admit((SEMAPHORE,))]] == [(False, False)]
            held = [*held, more[1], again[0]]

            # Finish the migration: the rest of the slot's keys, then the slot itself.
            with redis.Redis(port=owner) as direct:
                keys = direct.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            await asyncio.to_thread(_migrate, owner, target, keys)
            for port in (target, owner, *(p for p in ids if p not in (target, owner))):
                with redis.Redis(port=port) as direct:
                    direct.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
            assert cluster.owner_port(slot) == target

            # MOVED now: the limiter finds the new owner, with the counts carried over.
            await resumed_within(limiter, 2.0 * SLACK)
            assert (await limiter.admit((SEMAPHORE,))).allowed is False
            assert (await limiter.admit((BUCKET,))).allowed is False
            for decision in held:
                await limiter.release(decision.lease)
            await exact(limiter)
        finally:
            await limiter.close()
