"""Key naming, argument validation and backend selection."""

from __future__ import annotations

import pytest

from onwards.config.model import ConcurrencyCheck, LimitsSettings, RateCheck
from onwards.limits import (
    KeySpace,
    MemoryLimiter,
    RedisLimiter,
    build_limiter,
    validate_check,
    validate_settings,
)


def test_default_keys_share_one_hash_tag() -> None:
    keys = KeySpace()
    assert keys.bucket("target:gpt-4") == "onwards:{onwards}:rl:target:gpt-4"
    assert keys.semaphore("key:premium_user") == "onwards:{onwards}:cc:key:premium_user"
    assert keys.key_for(RateCheck("provider", "provider:a:1f", 1, 1)) == "onwards:{onwards}:rl:provider:a:1f"
    assert keys.key_for(ConcurrencyCheck("target", "target:a", 1)) == "onwards:{onwards}:cc:target:a"
    assert keys.pattern("rl", "target:*") == "onwards:{onwards}:rl:target:*"


def test_tag_defaults_to_prefix_and_can_differ() -> None:
    assert KeySpace("gw").bucket("x") == "gw:{gw}:rl:x"
    assert KeySpace("gw", "team").semaphore("x") == "gw:{team}:cc:x"


def test_braces_in_a_limiter_id_cannot_move_the_slot() -> None:
    # Redis Cluster hashes the first {...}: that stays the tag, whatever the alias holds.
    key = KeySpace().bucket("target:{odd}")
    assert key.index("{onwards}") < key.index("{odd}")


@pytest.mark.parametrize(
    "prefix, tag", [("", ""), ("a{b", ""), ("ok", "t}"), ("with space", ""), ("ok", "a b")]
)
def test_bad_prefix_or_tag_is_refused(prefix: str, tag: str) -> None:
    with pytest.raises(ValueError, match="Redis key"):
        KeySpace(prefix, tag)


@pytest.mark.parametrize(
    "check, message",
    [
        (RateCheck("target", "", 1, 1), "empty limiter_id"),
        (RateCheck("target", "t", -1, 1), "rate must be a positive number"),
        (RateCheck("target", "t", float("inf"), 1), "rate must be a positive number"),
        (RateCheck("target", "t", True, 1), "rate must be a positive number"),
        (RateCheck("target", "t", 1, 1.5), "burst must be an integer"),  # type: ignore[arg-type]
        (ConcurrencyCheck("key", "", 1), "empty limiter_id"),
        (ConcurrencyCheck("key", "k", -2), "limit must be an integer >= 0"),
    ],
)
def test_bad_checks_are_refused(check, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_check(check)


def test_good_checks_pass() -> None:
    validate_check(RateCheck("target", "t", 0.25, 1))
    validate_check(ConcurrencyCheck("key", "k", 0))
    with pytest.raises(TypeError, match="not a limiter check"):
        validate_check("target:t")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings, message",
    [
        (LimitsSettings(on_redis_error="ignore"), "on_redis_error"),  # type: ignore[arg-type]
        (LimitsSettings(redis_timeout_ms=0), "redis_timeout_ms"),
        (LimitsSettings(lease_ttl_ms=-5), "lease_ttl_ms"),
        (LimitsSettings(renew_interval_ms=0), "renew_interval_ms"),
        (LimitsSettings(lease_ttl_ms=10_000, renew_interval_ms=10_000), "must be less than lease_ttl_ms"),
    ],
)
def test_bad_settings_are_refused(settings: LimitsSettings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_settings(settings)
    with pytest.raises(ValueError, match=message):
        MemoryLimiter(settings)


def test_build_limiter_picks_the_backend() -> None:
    settings = LimitsSettings()
    memory = build_limiter(None, "onwards", settings)
    assert isinstance(memory, MemoryLimiter)
    assert "each worker process counts on its own" in memory.description
    shared = build_limiter("redis://127.0.0.1:6379/0", "gw", settings)
    assert isinstance(shared, RedisLimiter)
    assert shared.keys.base == "gw:{gw}"
    assert "127.0.0.1:6379" in shared.description
