"""The response store: the same contract in memory and in Redis; Redis keys readable and expiring."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from onwards.responses.store import (
    MemoryResponseStore,
    RedisResponseStore,
    ResponseStoreError,
    StoredResponse,
    valid_id,
)
from tests.support.processes import free_port

RECORD = StoredResponse(
    response={"id": "resp_1", "object": "response", "output": []},
    messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryResponseStore()
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("unique_prefix")
    redis_store = RedisResponseStore.from_url(url, prefix=prefix, ttl_secs=60)
    yield redis_store
    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await redis_store.close()


async def test_saved_records_load_back(store: Any) -> None:
    await store.save("resp_1", RECORD)
    assert await store.load("resp_1") == RECORD
    assert await store.load("resp_unknown") is None


async def test_a_record_is_a_snapshot(store: Any) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "a"}]
    await store.save("resp_2", StoredResponse(response={}, messages=messages))
    messages.append({"role": "assistant", "content": "changed later"})
    loaded = await store.load("resp_2")
    assert loaded is not None and loaded.messages == [{"role": "user", "content": "a"}]


async def test_redis_key_is_json_under_the_prefix_with_a_ttl(redis_url: str, unique_prefix: str) -> None:
    store = RedisResponseStore.from_url(redis_url, prefix=unique_prefix, ttl_secs=120)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await store.save("resp_abc", RECORD)
        key = f"{unique_prefix}:responses:resp_abc"
        assert store.key("resp_abc") == key
        assert orjson.loads(await client.get(key)) == {
            "response": RECORD.response,
            "messages": RECORD.messages,
        }
        assert 0 < await client.ttl(key) <= 120
        await client.set(key, b"not json")
        assert await store.load("resp_abc") is None
    finally:
        await client.delete(f"{unique_prefix}:responses:resp_abc")
        await client.aclose()
        await store.close()


async def test_redis_down_is_a_store_error() -> None:
    store = RedisResponseStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(ResponseStoreError):
            await store.save("resp_1", RECORD)
        with pytest.raises(ResponseStoreError):
            await store.load("resp_1")
    finally:
        await store.close()


async def test_memory_store_expires_and_evicts_oldest() -> None:
    now = [0.0]
    store = MemoryResponseStore(ttl_secs=10, max_entries=2, clock=lambda: now[0])
    await store.save("a", RECORD)
    await store.save("b", RECORD)
    await store.save("c", RECORD)
    assert await store.load("a") is None  # evicted: over max_entries
    assert await store.load("b") == RECORD
    now[0] = 10.0
    assert await store.load("b") is None  # expired
    assert await store.load("c") is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("resp_0af3", True),
        ("resp-x_Y", True),
        ("", False),
        ("a:b", False),
        ("a b", False),
        (3, False),
        ("x" * 129, False),
    ],
)
def test_only_plain_ids_name_a_stored_response(value: Any, ok: bool) -> None:
    assert valid_id(value) is ok


async def test_memory_store_is_bounded_by_size() -> None:
    size = len(RECORD.encode())
    store = MemoryResponseStore(max_bytes=2 * size + 1)
    for name in ("a", "b", "c"):
        await store.save(name, RECORD)
    assert await store.load("a") is None  # the oldest went to stay under max_bytes
    assert await store.load("b") == RECORD
    assert await store.load("c") == RECORD
    await store.save("c", RECORD)  # saving again replaces, it does not count twice
    assert await store.load("b") == RECORD
