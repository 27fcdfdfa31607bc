"""The start-up check of the Redis URL, run by the CLI before any worker starts.

A URL the limiter cannot use stops the start with one line naming the problem: an unknown scheme, a
malformed node list, a db other than 0 on a cluster, a Sentinel port given as redis://, a Sentinel
that knows no such service, a wrong password. A Redis that is merely down is not a reason to refuse
to start (the failure policy covers outages, and Redis may come up after the gateway): the check
then passes and the workers keep trying.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from onwards.limits.keys import KeySpace
from onwards.limits.redis.errors import RedisMisconfigured
from onwards.limits.redis.transport import PipelinedRedis
from onwards.limits.redis.url import RedisURLError, parse_redis_url

CHECK_TIMEOUT_S = 3.0


def redis_url_problem(url: str, prefix: str, *, timeout: float = CHECK_TIMEOUT_S) -> str | None:
    """One line saying why the limiter cannot use `url`, or None when it can (or Redis is down)."""
    try:
        target = parse_redis_url(url)
        keys = KeySpace(prefix)
    except (RedisURLError, ValueError) as error:
        return str(error)
    return asyncio.run(_connect(PipelinedRedis(target, connect_timeout=timeout, slot_tag=keys.tag)))


async def _connect(transport: PipelinedRedis) -> str | None:
    try:
        await transport.execute_command("PING")
    except RedisMisconfigured as error:
        return str(error)
    except (RedisError, OSError, TimeoutError):
        return None  # an outage, not a mistake in the URL
    finally:
        await transport.aclose()
    return None
