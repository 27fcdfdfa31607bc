"""The Redis limiter: limits shared by every worker of every replica.

limiter.py    the policy: what a reply or a failure means (RedisLimiter)
encoding.py   checks -> script arguments, pre-packed RESP per set of checks
batcher.py    one write per event-loop iteration: the admissions and releases of it
transport.py  the pipelined connection to Redis
url.py        the Redis URL forms, parsed and redacted in one place
"""

from onwards.limits.redis.encoding import load_script
from onwards.limits.redis.limiter import WORKER_START_TIMEOUT_S, RedisLimiter
from onwards.limits.redis.url import RedisTarget, RedisURLError, parse_redis_url, redact_url

__all__ = [
    "WORKER_START_TIMEOUT_S",
    "RedisLimiter",
    "RedisTarget",
    "RedisURLError",
    "load_script",
    "parse_redis_url",
    "redact_url",
]
