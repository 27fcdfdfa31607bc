"""The limiter's pipelined Redis client against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from onwards.limits.redis.transport import PipelinedRedis, pack_command

pytestmark = pytest.mark.redis


def test_pack_command_is_resp():
    packed = pack_command(("EVALSHA", b"ab", 2, 1.5))
    assert packed == b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$3\r\n1.5\r\n"


async def test_concurrent_calls_get_their_own_replies(redis_url, unique_prefix):
    client = PipelinedRedis(redis_url, connect_timeout=2)
    try:
        key = f"{unique_prefix}:n"
        replies = await asyncio.gather(*(client.execute_command("INCRBY", key, 1) for _ in range(200)))
        # Pipelined in order on one connection: the replies are exactly 1..200, each to its caller.
        assert replies == list(range(1, 201))
        assert await client.execute_command("ECHO", "x") == b"x"
        await client.execute_command("DEL", key)
    finally:
        await client.aclose()


async def test_errors_are_redis_py_exceptions(redis_url):
    client = PipelinedRedis(redis_url, connect_timeout=2)
    try:
        with pytest.raises(NoScriptError):
            await client.execute_command("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError, match="unknown command"):
            await client.execute_command("NOT-A-COMMAND")
        assert await client.execute_command("PING") == b"PONG"  # the stream stays in step
    finally:
        await client.aclose()


async def test_a_timed_out_call_does_not_shift_later_replies(redis_url, unique_prefix):
    client = PipelinedRedis(redis_url, connect_timeout=2)
    try:
        key = f"{unique_prefix}:list"
        # BLPOP blocks on the server; its caller gives up, and its late reply must be dropped.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.execute_command("BLPOP", key, "0.5")
        assert await client.execute_command("ECHO", "after") == b"after"
    finally:
        await client.aclose()


async def test_reconnects_after_the_server_drops_the_connection(redis_url):
    client = PipelinedRedis(redis_url, connect_timeout=2)
    admin = aioredis.from_url(redis_url)
    try:
        client_id = await client.execute_command("CLIENT", "ID")
        await admin.execute_command("CLIENT", "KILL", "ID", client_id)
        for _ in range(50):  # the close reaches us asynchronously
            try:
                assert await client.execute_command("PING") == b"PONG"
                break
            except Exception:
                await asyncio.sleep(0.02)
        assert await client.execute_command("CLIENT", "ID") != client_id
    finally:
        await client.aclose()
        await admin.aclose()


async def test_unreachable_server_fails_within_the_connect_timeout():
    client = PipelinedRedis("redis://127.0.0.1:1/0", connect_timeout=0.5)
    with pytest.raises(OSError):
        await client.execute_command("PING")
