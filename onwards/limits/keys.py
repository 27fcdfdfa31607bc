"""Redis key names of one gateway (limits and stored config), and the validation of what goes into them.

Layout: ``<prefix>:{<tag>}:rl:<limiter_id>`` for a request bucket (a hash),
``<prefix>:{<tag>}:tk:<limiter_id>`` for a bucket of model tokens (a hash of the same shape) and
``<prefix>:{<tag>}:cc:<limiter_id>`` for a concurrency semaphore (a sorted set), for example
``onwards:{onwards}:rl:target:gpt-4``. The ``{<tag>}`` part is a Redis Cluster hash tag: every key of
one gateway hashes to the same slot, which is what lets one script touch the key, target and
provider limits of a request together. The tag comes before the limiter id on purpose: Cluster
hashes the first ``{...}`` of a key, so braces inside a key or target name cannot move the slot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from onwards.config.model import Check, ConcurrencyCheck, LimitsSettings, RateCheck, TokenCheck

DEFAULT_PREFIX = "onwards"


def check_key_part(what: str, value: str) -> str:
    """Refuse a prefix or hash tag that would break the key layout (ValueError naming `what`)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"the Redis key {what} must be a non-empty string, got {value!r}")
    if "{" in value or "}" in value:
        # A brace here would change which part of the key Redis Cluster hashes.
        raise ValueError(f"the Redis key {what} must not contain '{{' or '}}', got {value!r}")
    if any(ch.isspace() for ch in value) or not value.isprintable():
        # Keys that are painful to type in redis-cli, and names CLIENT SETNAME refuses.
        raise ValueError(
            f"the Redis key {what} must not contain whitespace or control characters, got {value!r}"
        )
    return value


def config_key(prefix: str) -> str:
    """The hash holding a config pushed with `onwards config push`, in the slot of the limits."""
    return f"{prefix}:{{{prefix}}}:config"


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds the Redis keys of one gateway (one prefix and one hash tag)."""

    prefix: str = DEFAULT_PREFIX
    tag: str = ""  # empty means "same as the prefix"

    def __post_init__(self) -> None:
        check_key_part("prefix", self.prefix)
        if self.tag == "":
            object.__setattr__(self, "tag", self.prefix)
        check_key_part("hash tag", self.tag)

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.tag}}}"

    def bucket(self, limiter_id: str) -> str:
        return f"{self.base}:rl:{limiter_id}"

    def semaphore(self, limiter_id: str) -> str:
        return f"{self.base}:cc:{limiter_id}"

    def token_bucket(self, limiter_id: str) -> str:
        return f"{self.base}:tk:{limiter_id}"

    def key_for(self, check: Check) -> str:
        if isinstance(check, RateCheck):
            return self.bucket(check.limiter_id)
        if isinstance(check, TokenCheck):
            return self.token_bucket(check.limiter_id)
        return self.semaphore(check.limiter_id)

    def pattern(self, kind: str = "*", limiter_id: str = "*") -> str:
        """A SCAN/KEYS glob, e.g. ``pattern("rl", "target:*")``; braces are not glob syntax in Redis."""
        return f"{self.base}:{kind}:{limiter_id}"


def validate_check(check: Check) -> None:
    """Refuse a check a script could not evaluate sensibly, naming the limiter."""
    if isinstance(check, RateCheck | TokenCheck):
        if not check.limiter_id:
            raise ValueError(f"{type(check).__name__} has an empty limiter_id")
        rate = check.rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise ValueError(f"rate limit {check.limiter_id!r}: rate must be a positive number, got {rate!r}")
        burst = check.burst
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"rate limit {check.limiter_id!r}: burst must be an integer >= 1, got {burst!r}")
    elif isinstance(check, ConcurrencyCheck):
        if not check.limiter_id:
            raise ValueError("concurrency check has an empty limiter_id")
        limit = check.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(
                f"concurrency limit {check.limiter_id!r}: limit must be an integer >= 0, got {limit!r}"
            )
    else:
        raise TypeError(f"not a limiter check: {check!r}")


def validate_checks(checks: Iterable[Check]) -> None:
    for check in checks:
        validate_check(check)


def settings_problems(
    on_redis_error: object, redis_timeout_ms: object, lease_ttl_ms: object, renew_interval_ms: object
) -> list[tuple[str, str]]:
    """The one statement of what limiter settings must be: (field, what is wrong) for each problem.

    The config parser reports these at their field paths; `validate_settings` raises the first.
    """
    problems: list[tuple[str, str]] = []
    if on_redis_error not in ("allow", "deny"):
        problems.append(("on_redis_error", "must be 'allow' or 'deny'"))
    values = {
        "redis_timeout_ms": redis_timeout_ms,
        "lease_ttl_ms": lease_ttl_ms,
        "renew_interval_ms": renew_interval_ms,
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append((name, f"must be a positive integer (milliseconds), got {value!r}"))
    ttl, renew = values["lease_ttl_ms"], values["renew_interval_ms"]
    if isinstance(ttl, int) and isinstance(renew, int) and renew >= ttl:
        # A lease would expire between two renewals and a running stream would lose its permit.
        problems.append(("renew_interval_ms", f"must be less than lease_ttl_ms ({ttl})"))
    return problems


def validate_settings(settings: LimitsSettings) -> None:
    """Refuse limiter settings that would break the limiter's promises (ValueError)."""
    problems = settings_problems(
        settings.on_redis_error, settings.redis_timeout_ms, settings.lease_ttl_ms, settings.renew_interval_ms
    )
    if problems:
        field, message = problems[0]
        if field == "on_redis_error":
            message = f"{message}, got {settings.on_redis_error!r}"
        raise ValueError(f"limits.{field} {message}")
