"""RedisFollower against a real Redis: dropped subscriptions, many followers, clean shutdown.

No gateway processes here (tests/integration/test_reload.py has those); these tests pin the
follower's own promises on a real server, where fakeredis cannot drop a connection the way
a network or a Redis restart does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from onwards.config.parse import content_version
from onwards.config.sources.redis import (
    RedisFollower,
    config_key,
    load_from_redis,
    notify_channel,
    push_config,
    version_label,
)
from tests.support.config_recorder import Recorder

pytestmark = [pytest.mark.redis, pytest.mark.integration]

WAIT = 10.0


def config_bytes(url: str) -> bytes:
    return json.dumps({"targets": {"m": {"url": url}}}).encode()


async def eventually(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def admin(redis_url: str, unique_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client for inspecting and arranging things; deletes the test's key at the end."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.delete(config_key(unique_prefix))
    await client.aclose()


@pytest.fixture
async def followers(redis_url: str, unique_prefix: str) -> AsyncIterator[Callable[..., tuple]]:
    """`start(current_version, **options)` -> (follower, recorder, task); all cancelled at the end."""
    tasks: list[asyncio.Task[None]] = []

    def start(current_version: str, **options: object) -> tuple[RedisFollower, Recorder, asyncio.Task[None]]:
        recorder = Recorder()
        follower = RedisFollower(redis_url, unique_prefix, current_version, **options)
        task = asyncio.create_task(follower.run(recorder.apply, recorder.refuse))
        tasks.append(task)
        return follower, recorder, task

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(check: Callable[[], Awaitable[object]], what: str, timeout: float = WAIT) -> None:
    """Await `check()` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def subscribers(admin: aioredis.Redis, prefix: str) -> int:
    channel = notify_channel(prefix)
    return dict(await admin.pubsub_numsub(channel)).get(channel.encode(), 0)


async def _at_least(value: Awaitable[int], bound: int) -> bool:
    return await value >= bound


async def _at_most(value: Awaitable[int], bound: int) -> bool:
    return await value <= bound


async def follower_connections(admin: aioredis.Redis, name: str, kind: str | None = "pubsub") -> list[str]:
    """Ids of the connections carrying the follower's client name (pub/sub ones by default)."""
    clients = await (admin.client_list(_type=kind) if kind else admin.client_list())
    return [c["id"] for c in clients if c.get("name") == name]


async def kill(admin: aioredis.Redis, ids: list[str]) -> None:
    for client_id in ids:
        await admin.execute_command("CLIENT", "KILL", "ID", client_id)


async def test_follower_catches_up_after_its_subscription_is_killed(
    redis_url, unique_prefix, admin, followers
) -> None:
    first = await push_config(redis_url, unique_prefix, config_bytes("http://a.example"), "c.json")
    # Starting one version behind proves the first session is fully up once v1 is applied.
    follower, recorder, _ = followers("v0-000000000000", recheck_secs=600)
    await eventually(lambda: recorder.applied, "the first session to catch up to v1")
    await until(lambda: follower_connections(admin, follower.client_name), "the follower to subscribe")

    # Every connection of the follower goes: the subscription and the one it reads with, so
    # nothing of the old session can see what happens next.
    old = await follower_connections(admin, follower.client_name, kind=None)
    await kill(admin, old)
    # Stored without a notice (what a push looks like to a follower that is not subscribed at
    # the moment): the periodic re-check is ten minutes away, so only the re-read that follows
    # the resubscription can find it.
    body = config_bytes("http://b.example")
    await admin.hset(
        config_key(unique_prefix), mapping={"version": 2, "body": body, "digest": content_version(body)}
    )
    expected = version_label(2, content_version(body))

    await eventually(lambda: len(recorder.applied) == 2, "the follower to catch up after reconnecting")
    assert recorder.versions == [first.version, expected]
    assert follower.current_version == expected
    await until(lambda: follower_connections(admin, follower.client_name), "the new subscription")
    assert not set(await follower_connections(admin, follower.client_name)) & set(old)

    # And the new subscription carries notices again.
    third = await push_config(redis_url, unique_prefix, config_bytes("http://c.example"), "c.json")
    await eventually(lambda: len(recorder.applied) == 3, "a push on the new subscription")
    assert recorder.versions == [first.version, expected, third.version]


async def test_push_during_the_reconnect_is_not_lost(redis_url, unique_prefix, admin, followers) -> None:
    first = await push_config(redis_url, unique_prefix, config_bytes("http://a.example"), "c.json")
    follower, recorder, _ = followers(first.version, recheck_secs=600)
    await until(lambda: follower_connections(admin, follower.client_name), "the follower to subscribe")

    for round_ in range(3):  # a few kills in a row, each immediately followed by a push
        for client_id in await follower_connections(admin, follower.client_name):
            await admin.execute_command("CLIENT", "KILL", "ID", client_id)
        pushed = await push_config(
            redis_url, unique_prefix, config_bytes(f"http://r{round_}.example"), "c.json"
        )
        await eventually(lambda pushed=pushed: follower.current_version == pushed.version, f"round {round_}")
    assert recorder.refused == []


async def test_many_followers_converge_on_one_push(redis_url, unique_prefix, admin, followers) -> None:
    first = await push_config(redis_url, unique_prefix, config_bytes("http://a.example"), "c.json")
    started = [followers(first.version, recheck_secs=600) for _ in range(6)]
    await until(lambda: _at_least(subscribers(admin, unique_prefix), 6), "six subscriptions")

    second = await push_config(redis_url, unique_prefix, config_bytes("http://b.example"), "c.json")
    assert second.receivers == 6
    await eventually(
        lambda: all(f.current_version == second.version for f, _, _ in started), "all six to converge", 5.0
    )
    for _, recorder, _ in started:
        assert recorder.versions == [second.version]
    assert (await load_from_redis(redis_url, unique_prefix)).version == second.version


async def test_cancelled_follower_leaves_no_subscription(redis_url, unique_prefix, admin) -> None:
    first = await push_config(redis_url, unique_prefix, config_bytes("http://a.example"), "c.json")
    follower = RedisFollower(redis_url, unique_prefix, first.version)
    task = asyncio.create_task(follower.run(lambda s: None, lambda m: None))
    await until(lambda: subscribers(admin, unique_prefix), "the follower to subscribe")
    assert await subscribers(admin, unique_prefix) == 1

    task.cancel()
    async with asyncio.timeout(3):
        with pytest.raises(asyncio.CancelledError):
            await task
    await until(lambda: _at_most(subscribers(admin, unique_prefix), 0), "the subscription to go", 2.0)
    assert await follower_connections(admin, follower.client_name) == []
