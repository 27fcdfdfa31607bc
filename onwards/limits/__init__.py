"""Request admission against key, target and provider limits.

`build_limiter` picks the backend: Redis when a URL is configured (limits shared by every worker
and replica), otherwise the in-process limiter (limits per worker process).
"""

from __future__ import annotations

from collections.abc import Callable

from onwards.config.model import LimitsSettings
from onwards.limits.base import ALLOW, Decision, Lease, Limiter, LimiterUnavailable
from onwards.limits.breaker import CircuitBreaker
from onwards.limits.keys import DEFAULT_PREFIX, KeySpace, validate_check, validate_checks, validate_settings
from onwards.limits.memory import MemoryLimiter
from onwards.limits.redis import WORKER_START_TIMEOUT_S, RedisLimiter

__all__ = [
    "ALLOW",
    "DEFAULT_PREFIX",
    "CircuitBreaker",
    "Decision",
    "KeySpace",
    "Lease",
    "Limiter",
    "LimiterUnavailable",
    "MemoryLimiter",
    "RedisLimiter",
    "build_limiter",
    "validate_check",
    "validate_checks",
    "validate_settings",
]


def build_limiter(
    redis_url: str | None,
    prefix: str,
    settings: LimitsSettings,
    *,
    hash_tag: str | None = None,
    on_state_change: Callable[[str], None] | None = None,
    on_error: Callable[[], None] | None = None,
    on_problem: Callable[[str | None], None] | None = None,
    on_deferred: Callable[[str, int], None] | None = None,
) -> Limiter:
    """The limiter for this worker; call ``await limiter.start(settings)`` before use.

    The hooks only apply to Redis (the in-process limiter cannot fail): ``on_state_change``
    receives "open" or "closed" when the circuit breaker changes state, ``on_error`` is called
    once per failed Redis call, ``on_problem`` with a one-line misconfiguration (or None once it
    is gone), ``on_deferred`` with ("kept" | "dropped", count) for releases Redis could not take.
    """
    if redis_url:
        return RedisLimiter(
            redis_url,
            prefix,
            settings,
            hash_tag=hash_tag,
            on_state_change=on_state_change,
            on_error=on_error,
            on_problem=on_problem,
            on_deferred=on_deferred,
            start_timeout_s=WORKER_START_TIMEOUT_S,
        )
    return MemoryLimiter(settings)
