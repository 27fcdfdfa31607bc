"""`token_limit` and `default_max_tokens`: parsed wherever a rate_limit may stand, refused with the
field's path when wrong."""

from __future__ import annotations

import hashlib

import pytest

from onwards.config import ConfigError, parse_config
from onwards.config.model import DEFAULT_MAX_TOKENS, RateCheck, TokenCheck
from onwards.proxy.plan import compile_config

PROVIDER = {"url": "http://h"}


def parse(doc: dict):
    return parse_config(doc, "config.json")


def error_of(doc: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    return str(info.value)


def test_token_limit_on_a_key_a_pool_a_provider_and_a_single_target() -> None:
    snap = parse(
        {
            "auth": {
                "key_definitions": {"alice": {"key": "sk-a", "token_limit": {"tokens_per_minute": 600}}}
            },
            "targets": {
                "pool": {
                    "token_limit": {"tokens_per_minute": 6000, "burst_tokens": 100},
                    "default_max_tokens": 256,
                    "providers": [PROVIDER, {"url": "http://p", "token_limit": {"tokens_per_minute": 60}}],
                },
                "single": {"url": "http://s", "token_limit": {"tokens_per_minute": 120}},
                "plain": {"url": "http://q"},
            },
        }
    )
    [key] = snap.keys_by_token["sk-a"].checks
    assert key == TokenCheck("key", "key:alice", 10.0, 600, 600)
    pool = snap.targets["pool"]
    assert pool.checks == (TokenCheck("target", "target:pool", 100.0, 100, 6000),)
    assert pool.default_max_tokens == 256
    digest = hashlib.sha256(b"http://p/\0\0").hexdigest()[:10]
    assert pool.providers[1].checks == (TokenCheck("provider", f"provider:pool:{digest}", 1.0, 60, 60),)
    assert pool.providers[0].checks == ()
    # One provider's limits are the alias's.
    single = snap.targets["single"]
    assert single.checks == (TokenCheck("target", "target:single", 2.0, 120, 120),)
    assert single.providers[0].checks == ()
    assert single.default_max_tokens == DEFAULT_MAX_TOKENS == snap.targets["plain"].default_max_tokens


def test_token_limit_comes_after_the_scopes_other_limits() -> None:
    target = parse(
        {
            "targets": {
                "m": {
                    "url": "http://h",
                    "token_limit": {"tokens_per_minute": 60},
                    "rate_limit": {"requests_per_second": 1},
                }
            }
        }
    ).targets["m"]
    assert [type(c) for c in target.checks] == [RateCheck, TokenCheck]
    assert target.checks[0].limiter_id == target.checks[1].limiter_id == "target:m"


def test_the_plan_knows_which_targets_and_keys_have_token_limits() -> None:
    active = compile_config(
        parse(
            {
                "auth": {
                    "key_definitions": {
                        "metered": {"key": "sk-1", "token_limit": {"tokens_per_minute": 60}},
                        "plain": {"key": "sk-2", "rate_limit": {"requests_per_second": 1}},
                    }
                },
                "targets": {
                    "own": {"url": "http://h", "token_limit": {"tokens_per_minute": 60}},
                    "provider": {
                        "providers": [{"url": "http://p", "token_limit": {"tokens_per_minute": 60}}]
                    },
                    "none": {"url": "http://n", "rate_limit": {"requests_per_second": 1}},
                },
            }
        )
    )
    assert active.token_keys == frozenset({"metered"})
    assert active.targets["own"].token_limited and active.targets["provider"].token_limited
    assert not active.targets["none"].token_limited
    assert active.targets["provider"].providers[0].token_ids


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ({}, "targets.m.token_limit.tokens_per_minute: required"),
        ({"tokens_per_minute": 0}, "targets.m.token_limit.tokens_per_minute: must be"),
        ({"tokens_per_minute": 1.5}, "targets.m.token_limit.tokens_per_minute: must be"),
        ({"tokens_per_minute": True}, "targets.m.token_limit.tokens_per_minute: must be"),
        ({"tokens_per_minute": 10, "burst_tokens": 0}, "targets.m.token_limit.burst_tokens: must be"),
    ],
)
def test_bad_token_limits_name_their_field(limit: dict, message: str) -> None:
    assert message in error_of({"targets": {"m": {"url": "http://h", "token_limit": limit}}})


def test_bad_default_max_tokens_names_its_field() -> None:
    assert "targets.m.default_max_tokens: must be" in error_of(
        {"targets": {"m": {"url": "http://h", "default_max_tokens": 0}}}
    )
