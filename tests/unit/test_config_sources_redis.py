"""The Redis config store and RedisFollower, against fakeredis.

Reconnecting after a real dropped connection (CLIENT KILL) is tested against a real Redis in
tests/integration/test_reload_redis.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import fakeredis
import pytest
from fakeredis import aioredis as fake_aioredis

from onwards.config.errors import ConfigError
from onwards.config.model import Snapshot
from onwards.config.parse import content_version
from onwards.config.sources import redis as redis_source
from onwards.config.sources.redis import (
    RedisFollower,
    config_key,
    load_from_redis,
    notify_channel,
    push_config,
    read_stored,
    redact_url,
    version_label,
)
from tests.support.config_recorder import Recorder

URL = "redis://fake:6379/0"  # never dialled: connect_redis is replaced by fakeredis
PREFIX = "onwards"
KEY = config_key(PREFIX)
WAIT = 5.0


def config_bytes(url: str, **target: object) -> bytes:
    return json.dumps({"targets": {"m": {"url": url, **target}}}).encode()


def label(number: int, body: bytes) -> str:
    return version_label(number, content_version(body))


def url_of(snapshot: Snapshot) -> str:
    return snapshot.targets["m"].providers[0].url


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    """One fake Redis server that every connection the config code opens talks to."""
    server = fakeredis.FakeServer()

    def connect(redis_url: str, *, client_name: str | None = None) -> fake_aioredis.FakeRedis:
        return fake_aioredis.FakeRedis(server=server)

    monkeypatch.setattr(redis_source, "connect_redis", connect)
    return server


@pytest.fixture
async def direct(server: fakeredis.FakeServer) -> AsyncIterator[fake_aioredis.FakeRedis]:
    """A client for arranging data behind the config code's back."""
    client = fake_aioredis.FakeRedis(server=server)
    yield client
    await client.aclose()


@pytest.fixture
async def follow(
    server: fakeredis.FakeServer,
) -> AsyncIterator[tuple[Recorder, Callable[..., RedisFollower]]]:
    recorder = Recorder()
    tasks: list[asyncio.Task[None]] = []

    def start(current_version: str, **options: object) -> RedisFollower:
        follower = RedisFollower(URL, PREFIX, current_version, **options)
        tasks.append(asyncio.create_task(follower.run(recorder.apply, recorder.refuse)))
        return follower

    yield recorder, start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


async def store_silently(client: fake_aioredis.FakeRedis, version: int, body: bytes) -> str:
    """Store a config the way a push does but without the notice: a notice that got lost."""
    await client.hset(KEY, mapping={"version": version, "body": body, "digest": content_version(body)})
    return label(version, body)


async def subscribed(client: fake_aioredis.FakeRedis, count: int = 1) -> None:
    for _ in range(250):
        numsub = dict(await client.pubsub_numsub(notify_channel(PREFIX)))
        if numsub.get(notify_channel(PREFIX).encode(), 0) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the follower never subscribed")


# -- the store -----------------------------------------------------------------------------------


async def test_push_stores_body_and_increments_version(server, direct) -> None:
    first = config_bytes("http://a.example")
    result = await push_config(URL, PREFIX, first, "config.json")
    assert result.version == f"v1-{content_version(first)}"
    assert result.key == "onwards:{onwards}:config"

    second = config_bytes("http://b.example")
    assert (await push_config(URL, PREFIX, second, "config.json")).version == f"v2-{content_version(second)}"

    stored = await read_stored(URL, PREFIX)
    assert stored.version == f"v2-{content_version(second)}"
    assert stored.number == 2
    assert stored.body == second  # byte for byte, not re-serialised
    assert stored.digest == content_version(second)
    assert stored.source == "config.json"
    assert stored.pushed_at is not None and stored.pushed_at > 1_600_000_000


async def test_push_publishes_the_version(server, direct) -> None:
    pubsub = direct.pubsub()
    await pubsub.subscribe(notify_channel(PREFIX))
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    result = await push_config(URL, PREFIX, config_bytes("http://a.example"), "config.json")
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    await pubsub.aclose()
    assert result.receivers == 1
    assert message is not None and message["data"] == b"1"


async def test_prefixes_do_not_share_configs(server, direct) -> None:
    await push_config(URL, "team-a", config_bytes("http://a.example"), "a.json")
    await push_config(URL, "team-b", config_bytes("http://b.example"), "b.json")
    assert url_of(await load_from_redis(URL, "team-a")) == "http://a.example/"
    assert url_of(await load_from_redis(URL, "team-b")) == "http://b.example/"
    assert (await read_stored(URL, "team-b")).number == 1


async def test_load_from_redis_builds_the_snapshot(server) -> None:
    result = await push_config(URL, PREFIX, config_bytes("http://a.example"), "config.json")
    snapshot = await load_from_redis(URL, PREFIX)
    assert url_of(snapshot) == "http://a.example/"
    assert snapshot.version == result.version
    assert snapshot.origin == KEY


async def test_load_from_redis_with_nothing_stored(server) -> None:
    with pytest.raises(ConfigError) as caught:
        await load_from_redis(URL, PREFIX)
    assert str(caught.value).startswith("no config stored under onwards:{onwards}:config")
    assert "onwards config push" in str(caught.value)


async def test_load_from_redis_refuses_an_invalid_stored_body(server, direct) -> None:
    await store_silently(direct, 3, config_bytes("http://a.example", rate_limit={"requests_per_second": 0}))
    with pytest.raises(ConfigError) as caught:
        await load_from_redis(URL, PREFIX)
    assert KEY in str(caught.value)
    assert "targets.m.rate_limit.requests_per_second" in str(caught.value)


async def test_load_from_redis_with_something_else_under_the_key(server, direct) -> None:
    await direct.set(KEY, "not a hash")
    with pytest.raises(ConfigError, match=r"cannot read the config stored under onwards:\{onwards\}:config"):
        await load_from_redis(URL, PREFIX)


async def test_unreachable_redis_is_a_config_error_without_the_password(monkeypatch) -> None:
    # A real client (no fakeredis) dialling a port nothing listens on.
    with pytest.raises(ConfigError) as caught:
        await load_from_redis("redis://admin:s3cret@127.0.0.1:1/0", PREFIX)
    message = str(caught.value)
    assert message.startswith("cannot reach Redis at redis://admin:***@127.0.0.1:1/0")
    assert "s3cret" not in message


async def test_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"invalid Redis URL http://example\.com"):
        await read_stored("http://example.com", PREFIX)


@pytest.mark.parametrize("prefix", ["", "a{b}", "two words", "tab\there"])
async def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        await read_stored(URL, prefix)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@10.0.0.1:6379", "redis://:***@10.0.0.1:6379"),
        ("rediss://user:pw@cache.internal/2", "rediss://user:***@cache.internal/2"),
        ("redis://user:pw@[::1]:6380", "redis://user:***@[::1]:6380"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- following ------------------------------------------------------------------------------------


async def push(body: bytes) -> str:
    return (await push_config(URL, PREFIX, body, "c.json")).version


async def test_follower_applies_each_push(server, direct, follow) -> None:
    recorder, start = follow
    v1 = await push(config_bytes("http://a.example"))
    follower = start(v1)
    await subscribed(direct)

    v2 = await push(config_bytes("http://b.example"))
    await recorder.wait_for(lambda: recorder.applied, "v2 to be applied")
    assert recorder.versions == [v2]
    assert url_of(recorder.applied[0]) == "http://b.example/"
    assert recorder.applied[0].origin == KEY
    assert follower.current_version == v2

    v3 = await push(config_bytes("http://c.example"))
    await recorder.wait_for(lambda: len(recorder.applied) == 2, "v3 to be applied")
    assert recorder.versions == [v2, v3]
    assert recorder.refused == []


async def test_follower_catches_up_at_start(server, direct, follow) -> None:
    recorder, start = follow
    v1 = await push(config_bytes("http://a.example"))
    v2 = await push(config_bytes("http://b.example"))
    start(v1, recheck_secs=600)  # the worker loaded v1; v2 was pushed before the follower started
    await recorder.wait_for(lambda: recorder.applied, "the catch-up to v2")
    assert recorder.versions == [v2]


async def test_follower_refuses_an_invalid_stored_config_once(server, direct, follow) -> None:
    recorder, start = follow
    v1 = await push(config_bytes("http://a.example"))
    follower = start(v1, recheck_secs=0.2)
    await subscribed(direct)

    # Written around `onwards config push` (which would have refused it).
    await push(b'{"targets": ')
    await recorder.wait_for(lambda: recorder.refused, "the invalid v2 to be refused")
    await asyncio.sleep(0.6)  # several periodic re-checks of the same stored version
    [message] = recorder.refused
    assert KEY in message and "invalid JSON" in message
    assert follower.current_version == v1

    v3 = await push(config_bytes("http://c.example"))
    await recorder.wait_for(lambda: recorder.applied, "the valid v3 to be applied")
    assert recorder.versions == [v3]


async def test_follower_waits_when_nothing_is_stored(server, direct, follow) -> None:
    recorder, start = follow
    start("v9-000000000000", recheck_secs=0.1)
    await subscribed(direct)
    await asyncio.sleep(0.3)
    assert recorder.applied == [] and recorder.refused == []

    v1 = await push(config_bytes("http://a.example"))
    await recorder.wait_for(lambda: recorder.applied, "the first push to be applied")
    assert recorder.versions == [v1]


async def test_a_store_that_starts_counting_again_is_still_followed(server, direct, follow) -> None:
    # Redis without persistence restarts: the data is gone and the next push is v1 again,
    # while the workers still serve the old v1. The digest in the version tells them apart.
    recorder, start = follow
    old_v1 = await push(config_bytes("http://a.example"))
    start(old_v1, recheck_secs=0.1)
    await subscribed(direct)

    await direct.delete(KEY)
    new_v1 = await push(config_bytes("http://b.example"))
    assert new_v1.startswith("v1-") and new_v1 != old_v1
    await recorder.wait_for(lambda: recorder.applied, "the new v1 to be applied")
    assert recorder.versions == [new_v1]


async def settled(start, recorder: Recorder, direct, **options: object) -> tuple[RedisFollower, str]:
    """A follower that has caught up to v1 and has nothing left to do.

    It starts one version behind, so v1 being applied shows its first read is done; the
    pause lets the check that its subscribe confirmation triggers pass as well. After
    that, only a notice, a trigger() or the periodic re-check can make it read again.
    """
    v1 = await push(config_bytes("http://a.example"))
    follower = start("v0-000000000000", **options)
    await recorder.wait_for(lambda: recorder.applied, "the catch-up to v1")
    await subscribed(direct)
    await asyncio.sleep(0.3)
    recorder.applied.clear()
    return follower, v1


async def test_periodic_recheck_finds_a_version_whose_notice_was_lost(server, direct, follow) -> None:
    recorder, start = follow
    await settled(start, recorder, direct, recheck_secs=0.5)

    v2 = await store_silently(direct, 2, config_bytes("http://b.example"))
    await recorder.wait_for(lambda: recorder.applied, "the periodic re-check to find v2", timeout=2.0)
    assert recorder.versions == [v2]


async def test_trigger_rereads_the_stored_version(server, direct, follow) -> None:
    recorder, start = follow
    follower, _ = await settled(start, recorder, direct, recheck_secs=600)

    v2 = await store_silently(direct, 2, config_bytes("http://b.example"))
    await asyncio.sleep(0.3)
    assert recorder.applied == []  # no notice, no re-check due: nothing happens by itself

    follower.trigger()
    await recorder.wait_for(lambda: recorder.applied, "trigger() to find v2")
    assert recorder.versions == [v2]


async def test_follower_resubscribes_and_rereads_after_losing_redis(server, direct, follow) -> None:
    recorder, start = follow
    v1 = await push(config_bytes("http://a.example"))
    start(v1, recheck_secs=600, ping_idle_secs=0.1, pong_timeout_secs=0.2, reconnect_max_secs=0.3)
    await subscribed(direct)

    server.connected = False  # every connection fails from now on
    await asyncio.sleep(0.8)
    server.connected = True
    # Stored while the follower was away: no notice reaches it, and the periodic re-check
    # is ten minutes off, so only the re-read after resubscribing can find it.
    v2 = await store_silently(direct, 2, config_bytes("http://b.example"))
    await recorder.wait_for(lambda: recorder.applied, "v2 after the reconnect")
    assert recorder.versions == [v2]

    await subscribed(direct)
    v3 = await push(config_bytes("http://c.example"))
    await recorder.wait_for(lambda: len(recorder.applied) == 2, "v3 announced on the new subscription")
    assert recorder.versions == [v2, v3]


async def test_idle_subscription_is_kept_alive_by_pings(server, direct, follow, caplog) -> None:
    recorder, start = follow
    v1 = await push(config_bytes("http://a.example"))
    start(v1, recheck_secs=600, ping_idle_secs=0.05, pong_timeout_secs=0.5)
    await subscribed(direct)
    caplog.clear()
    await asyncio.sleep(0.6)  # many idle periods, each answered by a PONG
    assert not [r for r in caplog.records if "lost" in r.getMessage()]

    v2 = await push(config_bytes("http://b.example"))
    await recorder.wait_for(lambda: recorder.applied, "a push after the idle time")
    assert recorder.versions == [v2]


async def test_follower_keeps_retrying_while_redis_is_down_at_start(server, direct, follow) -> None:
    recorder, start = follow
    v1 = await push(config_bytes("http://a.example"))
    server.connected = False
    start("v0-000000000000", recheck_secs=600, reconnect_max_secs=0.2)
    await asyncio.sleep(0.6)
    assert recorder.applied == []
    server.connected = True
    await recorder.wait_for(lambda: recorder.applied, "v1 once Redis answers")
    assert recorder.versions == [v1]


async def test_something_else_under_the_key_is_refused_once(server, direct, follow) -> None:
    recorder, start = follow
    await direct.set(KEY, "not a hash")
    start("v1-000000000000", recheck_secs=0.1)
    await recorder.wait_for(lambda: recorder.refused, "the wrong-type key to be refused")
    await asyncio.sleep(0.4)
    [message] = recorder.refused
    assert KEY in message

    await direct.delete(KEY)
    v1 = await push(config_bytes("http://a.example"))
    await recorder.wait_for(lambda: recorder.applied, "a proper push after the key was cleaned up")
    assert recorder.versions == [v1]


async def test_follower_cancels_promptly(server, direct) -> None:
    v1 = await push(config_bytes("http://a.example"))
    follower = RedisFollower(URL, PREFIX, v1)
    task = asyncio.create_task(follower.run(lambda s: None, lambda m: None))
    await subscribed(direct)
    task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
    # (That the subscription is closed too is checked against a real Redis: fakeredis keeps
    # a closed connection's subscriptions.)
