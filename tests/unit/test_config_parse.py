"""The config parser turns each target shape, key rule and limit into the right Snapshot."""

from __future__ import annotations

import hashlib
import logging

import pytest

from onwards.config import (
    ConcurrencyCheck,
    ConfigError,
    FallbackSpec,
    HttpPool,
    LimitsSettings,
    RateCheck,
    Snapshot,
    parse_config,
)


def parse(doc: dict) -> Snapshot:
    return parse_config(doc, "config.json")


def one(doc_target: object, alias: str = "m", **top: object):
    return parse({"targets": {alias: doc_target}, **top}).targets[alias]


def provider_id(alias: str, url: str, model: str = "", key: str = "") -> str:
    digest = hashlib.sha256(f"{url}\0{model}\0{key}".encode()).hexdigest()[:10]
    return f"provider:{alias}:{digest}"


# ---------------------------------------------------------------------------------------------
# Top level


def test_empty_targets_is_a_valid_config_with_defaults():
    snap = parse({"targets": {}})
    assert snap.targets == {}
    assert snap.keys_by_token == {}
    assert snap.http_pool == HttpPool(max_idle_per_host=100, idle_timeout_secs=90.0)
    assert snap.limits == LimitsSettings("allow", 250, 30_000, 10_000)
    assert snap.max_body_bytes == 32 * 1024 * 1024
    assert snap.origin == "config.json"


def test_top_level_settings_override_defaults():
    snap = parse(
        {
            "targets": {},
            "http_pool": {"max_idle_per_host": 7, "idle_timeout_secs": 1.5},
            "limits": {
                "on_redis_error": "deny",
                "redis_timeout_ms": 40,
                "lease_ttl_ms": 5000,
                "renew_interval_ms": 1000,
            },
            "max_body_bytes": 1024,
        }
    )
    assert snap.http_pool == HttpPool(max_idle_per_host=7, idle_timeout_secs=1.5)
    assert snap.limits == LimitsSettings("deny", 40, 5000, 1000)
    assert snap.max_body_bytes == 1024


def test_strict_mode_false_and_nulls_are_accepted():
    snap = parse({"targets": {}, "strict_mode": False, "auth": None, "http_pool": None, "limits": None})
    assert snap.http_pool == HttpPool()
    assert snap.limits == LimitsSettings()


def test_targets_keep_config_order():
    snap = parse({"targets": {name: {"url": "http://h"} for name in ("z", "a", "m")}})
    assert list(snap.targets) == ["z", "a", "m"]


# ---------------------------------------------------------------------------------------------
# Single-provider shape


def test_single_provider_shape():
    target = one(
        {
            "url": "https://api.openai.com/v1",
            "onwards_key": "sk-up",
            "onwards_model": "gpt-4-turbo",
            "weight": 4,
            "rate_limit": {"requests_per_second": 5, "burst_size": 10},
            "concurrency_limit": {"max_concurrent_requests": 3},
            "response_headers": {"Input-Price-Per-Token": "0.0001"},
            "sanitize_response": True,
            "request_timeout_secs": 30,
        },
        alias="gpt-4",
    )
    assert target.alias == "gpt-4"
    assert target.strategy == "weighted_random"
    assert target.fallback == FallbackSpec()
    assert target.keys is None
    # A single provider's limits are the target's limits: admitted once, with the target.
    assert target.checks == (
        RateCheck(scope="target", limiter_id="target:gpt-4", rate=5.0, burst=10),
        ConcurrencyCheck(scope="target", limiter_id="target:gpt-4", limit=3),
    )
    assert target.sanitize_response is True
    assert target.response_headers == ()
    assert target.weights == (4,)
    (p,) = target.providers
    assert p.checks == ()
    assert (p.alias, p.index, p.label) == ("gpt-4", 0, "gpt-4/0")
    assert p.url == "https://api.openai.com/v1/"
    assert p.base_path == "/v1"
    assert p.onwards_model == "gpt-4-turbo"
    assert p.weight == 4
    assert p.auth_header == ("Authorization", "Bearer sk-up")
    assert p.response_headers == (("Input-Price-Per-Token", "0.0001"),)
    assert p.sanitize_response is True
    assert p.request_timeout_secs == 30.0


def test_single_provider_defaults():
    (p,) = one({"url": "http://localhost:8080"}).providers
    assert p.url == "http://localhost:8080/"
    assert p.base_path == ""
    assert p.onwards_model is None
    assert p.weight == 1
    assert p.auth_header is None
    assert p.response_headers == ()
    assert p.sanitize_response is False
    assert p.request_timeout_secs is None
    assert p.checks == ()


@pytest.mark.parametrize(
    ("url", "normalised", "base_path"),
    [
        ("https://api.openai.com", "https://api.openai.com/", ""),
        ("https://api.openai.com/", "https://api.openai.com/", ""),
        ("https://api.openai.com/v1", "https://api.openai.com/v1/", "/v1"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/", "/v1"),
        ("http://10.0.0.5:8000/openai/v1", "http://10.0.0.5:8000/openai/v1/", "/openai/v1"),
        ("HTTPS://Example.com/v2", "https://Example.com/v2/", "/v2"),
        ("http://[::1]:9000", "http://[::1]:9000/", ""),
    ],
)
def test_url_normalisation(url, normalised, base_path):
    (p,) = one({"url": url}).providers
    assert (p.url, p.base_path) == (normalised, base_path)


def test_upstream_auth_header_name_and_prefix():
    target = parse(
        {
            "targets": {
                "named": {"url": "http://h", "onwards_key": "k1", "upstream_auth_header_name": "X-API-Key"},
                "prefixed": {
                    "url": "http://h",
                    "onwards_key": "k2",
                    "upstream_auth_header_prefix": "ApiKey ",
                },
                "raw": {"url": "http://h", "onwards_key": "k3", "upstream_auth_header_prefix": ""},
                "both": {
                    "url": "http://h",
                    "onwards_key": "k4",
                    "upstream_auth_header_name": "X-Custom-Auth",
                    "upstream_auth_header_prefix": "Token ",
                },
                "keyless": {"url": "http://h", "upstream_auth_header_name": "X-API-Key"},
            }
        }
    ).targets
    assert target["named"].providers[0].auth_header == ("X-API-Key", "Bearer k1")
    assert target["prefixed"].providers[0].auth_header == ("Authorization", "ApiKey k2")
    assert target["raw"].providers[0].auth_header == ("Authorization", "k3")
    assert target["both"].providers[0].auth_header == ("X-Custom-Auth", "Token k4")
    assert target["keyless"].providers[0].auth_header is None


def test_single_provider_strategy_and_fallback_are_not_fields_of_this_shape():
    target = one({"url": "http://h", "strategy": "priority", "fallback": {"enabled": True}})
    assert target.strategy == "weighted_random"
    assert target.fallback.enabled is False


def test_request_timeout_may_be_fractional_or_null():
    assert one({"url": "http://h", "request_timeout_secs": 0.25}).providers[0].request_timeout_secs == 0.25
    assert one({"url": "http://h", "request_timeout_secs": None}).providers[0].request_timeout_secs is None


# ---------------------------------------------------------------------------------------------
# Pool shape


def test_pool_shape():
    target = one(
        {
            "strategy": "priority",
            "fallback": {
                "enabled": True,
                "on_status": [429, 5, 50],
                "on_rate_limit": True,
                "max_attempts": 5,
                "with_replacement": True,
            },
            "keys": ["client-key"],
            "rate_limit": {"requests_per_second": 100, "burst_size": 200},
            "concurrency_limit": {"max_concurrent_requests": 50},
            "response_headers": {"X-Pool": "p", "X-Both": "pool"},
            "providers": [
                {"url": "https://a.example.com", "onwards_key": "sk-a", "weight": 3},
                {
                    "url": "https://b.example.com/v1",
                    "onwards_model": "other",
                    "weight": 0,
                    "rate_limit": {"requests_per_second": 2},
                    "concurrency_limit": {"max_concurrent_requests": 1},
                    "response_headers": {"X-Both": "provider"},
                },
            ],
        },
        alias="gpt-4",
    )
    assert target.strategy == "priority"
    assert target.fallback == FallbackSpec(
        enabled=True, on_status=(429, 5, 50), on_rate_limit=True, max_attempts=5, with_replacement=True
    )
    assert target.keys == frozenset({"client-key"})
    assert target.checks == (
        RateCheck("target", "target:gpt-4", 100.0, 200),
        ConcurrencyCheck("target", "target:gpt-4", 50),
    )
    assert target.response_headers == (("X-Pool", "p"), ("X-Both", "pool"))
    assert target.weights == (3, 0)
    a, b = target.providers
    assert (a.index, a.label, a.weight, a.checks) == (0, "gpt-4/0", 3, ())
    assert a.auth_header == ("Authorization", "Bearer sk-a")
    assert (b.index, b.label, b.weight) == (1, "gpt-4/1", 0)
    pid = provider_id("gpt-4", "https://b.example.com/v1/", "other")
    assert b.checks == (RateCheck("provider", pid, 2.0, 2), ConcurrencyCheck("provider", pid, 1))
    assert b.response_headers == (("X-Both", "provider"),)
    assert (b.url, b.base_path, b.onwards_model) == ("https://b.example.com/v1/", "/v1", "other")


def test_pool_defaults():
    target = one({"providers": [{"url": "http://h"}]})
    assert target.strategy == "weighted_random"
    assert target.fallback == FallbackSpec()
    assert target.checks == ()
    assert target.response_headers == ()
    assert target.sanitize_response is False
    assert target.keys is None


def test_fallback_defaults_and_parsed_status_wildcards():
    spec = one({"providers": [], "fallback": {"enabled": True, "on_status": [5]}}).fallback
    assert spec == FallbackSpec(enabled=True, on_status=(5,))
    assert spec.matches(503) and not spec.matches(429)
    assert one({"providers": [], "fallback": {}}).fallback == FallbackSpec()


def test_pool_may_be_empty():
    target = one({"providers": []})
    assert target.providers == ()
    assert target.weights == ()


def test_pool_sanitize_response_is_ored_into_every_provider():
    on = one({"sanitize_response": True, "providers": [{"url": "http://a"}, {"url": "http://b"}]})
    assert on.sanitize_response is True
    assert [p.sanitize_response for p in on.providers] == [True, True]
    off = one({"providers": [{"url": "http://a", "sanitize_response": True}, {"url": "http://b"}]})
    assert off.sanitize_response is False
    assert [p.sanitize_response for p in off.providers] == [True, False]


def test_providers_win_over_url_when_both_are_present():
    target = one({"url": "http://ignored", "providers": [{"url": "http://used"}]})
    assert [p.url for p in target.providers] == ["http://used/"]


def test_null_providers_with_url_is_the_single_provider_shape():
    target = one({"url": "http://single", "providers": None})
    assert [p.url for p in target.providers] == ["http://single/"]


def test_routing_rules_empty_list_is_accepted():
    assert one({"providers": [], "routing_rules": []}).providers == ()


# ---------------------------------------------------------------------------------------------
# Legacy list shape


def test_legacy_list_shape():
    target = one(
        [
            {
                "url": "http://a",
                "onwards_key": "ka",
                "keys": ["first"],
                "rate_limit": {"requests_per_second": 3},
                "sanitize_response": True,
            },
            {
                "url": "http://b",
                "keys": ["second"],  # only the first element's keys count
                "concurrency_limit": {"max_concurrent_requests": 2},
                "weight": 2,
            },
        ]
    )
    assert target.strategy == "weighted_random"
    assert target.fallback == FallbackSpec()
    assert target.keys == frozenset({"first"})
    assert target.checks == ()
    assert target.weights == (1, 2)
    a, b = target.providers
    assert a.checks == (RateCheck("provider", provider_id("m", "http://a/", key="ka"), 3.0, 3),)
    assert b.checks == (ConcurrencyCheck("provider", provider_id("m", "http://b/"), 2),)
    assert (a.label, b.label) == ("m/0", "m/1")
    assert (a.sanitize_response, b.sanitize_response) == (True, False)


def test_legacy_empty_list_is_an_empty_pool():
    target = one([])
    assert target.providers == ()
    assert target.keys is None


def test_legacy_list_first_element_without_keys_leaves_target_open():
    assert one([{"url": "http://a"}, {"url": "http://b", "keys": ["x"]}]).keys is None


# ---------------------------------------------------------------------------------------------
# Limits


@pytest.mark.parametrize(("rps", "burst"), [(0.5, 1), (1, 1), (2.5, 3), (5.0, 5), (100, 100)])
def test_burst_defaults_to_rate_rounded_up(rps, burst):
    (check,) = one({"url": "http://h", "rate_limit": {"requests_per_second": rps}}).checks
    assert check == RateCheck("target", "target:m", float(rps), burst)


def test_explicit_burst_and_fractional_rate():
    (check,) = one({"url": "http://h", "rate_limit": {"requests_per_second": 0.2, "burst_size": 4}}).checks
    assert (check.rate, check.burst) == (0.2, 4)


def test_zero_concurrency_is_allowed_and_means_refuse_everything():
    (check,) = one({"url": "http://h", "concurrency_limit": {"max_concurrent_requests": 0}}).checks
    assert check == ConcurrencyCheck("target", "target:m", 0)


def test_limits_may_be_null():
    target = one({"url": "http://h", "rate_limit": None, "concurrency_limit": None})
    assert target.checks == ()


def test_provider_limiter_id_is_stable_across_reordering():
    a = {"url": "http://a", "onwards_key": "k", "rate_limit": {"requests_per_second": 1}}
    b = {"url": "http://b", "onwards_model": "x", "rate_limit": {"requests_per_second": 1}}
    first = one({"providers": [a, b]}).providers
    second = one({"providers": [b, a]}).providers
    assert first[0].checks[0].limiter_id == second[1].checks[0].limiter_id
    assert first[1].checks[0].limiter_id == second[0].checks[0].limiter_id
    assert first[0].checks[0].limiter_id == provider_id("m", "http://a/", key="k")


def test_provider_limiter_id_depends_on_key_model_url_and_alias_but_hides_the_key():
    base = {"url": "http://a", "onwards_key": "secret-token", "rate_limit": {"requests_per_second": 1}}
    ids = {
        one({"providers": [base]}).providers[0].checks[0].limiter_id,
        one({"providers": [{**base, "onwards_key": "other"}]}).providers[0].checks[0].limiter_id,
        one({"providers": [{**base, "onwards_model": "m2"}]}).providers[0].checks[0].limiter_id,
        one({"providers": [{**base, "url": "http://b"}]}).providers[0].checks[0].limiter_id,
        one({"providers": [base]}, alias="n").providers[0].checks[0].limiter_id,
    }
    assert len(ids) == 5
    assert not any("secret" in i for i in ids)


def test_trailing_slash_does_not_change_provider_limiter_id():
    rl = {"rate_limit": {"requests_per_second": 1}}
    x = one({"providers": [{"url": "http://a/v1", **rl}]}).providers[0].checks[0].limiter_id
    y = one({"providers": [{"url": "http://a/v1/", **rl}]}).providers[0].checks[0].limiter_id
    assert x == y


def test_identical_limited_providers_get_separate_limiters():
    limited = {"url": "http://a", "concurrency_limit": {"max_concurrent_requests": 1}}
    providers = one({"providers": [{"url": "http://a"}, limited, limited]}).providers
    base = provider_id("m", "http://a/")
    assert providers[0].checks == ()
    # The unlimited twin takes no id, so the limited ones keep theirs if it moves.
    assert providers[1].checks[0].limiter_id == base
    assert providers[2].checks[0].limiter_id == base + "~2"


# ---------------------------------------------------------------------------------------------
# Keys


def test_literal_keys_and_definition_names_both_work_in_target_keys():
    snap = parse(
        {
            "auth": {"key_definitions": {"basic_user": {"key": "sk-basic"}, "premium": {"key": "sk-prem"}}},
            "targets": {"m": {"url": "http://h", "keys": ["basic_user", "literal-token"]}},
        }
    )
    assert snap.targets["m"].keys == frozenset({"sk-basic", "literal-token"})


def test_tokens_may_contain_inner_spaces_and_punctuation():
    target = one({"url": "http://h", "keys": ["two words", "sk-a.b_c~d/e+f="]})
    assert target.keys == frozenset({"two words", "sk-a.b_c~d/e+f="})


def test_definition_named_after_its_own_token_is_not_ambiguous():
    snap = parse(
        {
            "auth": {"key_definitions": {"sk-same": {"key": "sk-same"}}},
            "targets": {"m": {"url": "http://h", "keys": ["sk-same"]}},
        }
    )
    assert snap.targets["m"].keys == frozenset({"sk-same"})


def test_global_keys_merge_into_targets():
    snap = parse(
        {
            "auth": {
                "global_keys": ["g1", "shared", "premium"],
                "key_definitions": {"premium": {"key": "sk-p"}},
            },
            "targets": {
                "keyed": {"url": "http://h", "keys": ["own", "shared"]},
                "unkeyed": {"url": "http://h"},
                "empty": {"url": "http://h", "keys": []},
            },
        }
    )
    assert snap.targets["keyed"].keys == frozenset({"own", "shared", "g1", "sk-p"})
    assert snap.targets["unkeyed"].keys == frozenset({"g1", "shared", "sk-p"})
    assert snap.targets["empty"].keys == frozenset({"g1", "shared", "sk-p"})


def test_without_global_keys_targets_without_keys_are_open():
    snap = parse(
        {
            "auth": {"global_keys": []},
            "targets": {"open": {"url": "http://h"}, "closed": {"url": "http://h", "keys": []}},
        }
    )
    assert snap.targets["open"].keys is None
    # An explicit empty list with no global keys means no token passes.
    assert snap.targets["closed"].keys == frozenset()


def test_key_definitions_do_not_grant_access_by_themselves():
    snap = parse(
        {
            "auth": {"key_definitions": {"user": {"key": "sk-user"}}},
            "targets": {"open": {"url": "http://h"}, "keyed": {"url": "http://h", "keys": ["other"]}},
        }
    )
    assert snap.targets["open"].keys is None
    assert snap.targets["keyed"].keys == frozenset({"other"})


def test_keys_by_token_holds_definitions_with_key_scope_checks_and_labels():
    snap = parse(
        {
            "auth": {
                "key_definitions": {
                    "basic": {
                        "key": "sk-basic",
                        "rate_limit": {"requests_per_second": 10, "burst_size": 20},
                        "concurrency_limit": {"max_concurrent_requests": 2},
                        "labels": {"tier": "basic", "team": "a"},
                    },
                    "bare": {"key": "sk-bare"},
                }
            },
            "targets": {},
        }
    )
    basic = snap.keys_by_token["sk-basic"]
    assert basic.name == "basic"
    assert basic.key == "sk-basic"
    assert basic.checks == (RateCheck("key", "key:basic", 10.0, 20), ConcurrencyCheck("key", "key:basic", 2))
    assert basic.labels == (("tier", "basic"), ("team", "a"))
    bare = snap.keys_by_token["sk-bare"]
    assert (bare.checks, bare.labels) == ((), ())
    assert set(snap.keys_by_token) == {"sk-basic", "sk-bare"}
    # Limiter ids name the definition, never the token.
    assert all("sk-" not in c.limiter_id for c in basic.checks)


def test_auth_without_global_keys_is_accepted():
    snap = parse({"auth": {"key_definitions": {"u": {"key": "t"}}}, "targets": {"m": {"url": "http://h"}}})
    assert snap.targets["m"].keys is None
    assert "t" in snap.keys_by_token


# ---------------------------------------------------------------------------------------------
# Unknown and unused fields


def test_unknown_fields_warn_and_unused_fields_are_logged_at_debug_with_paths(caplog):
    caplog.set_level(logging.DEBUG, logger="onwards.config")
    parse(
        {
            "extra": 1,
            "targets": {
                "a": {"url": "http://h", "key": "x", "trusted": True},
                "b": {
                    "providers": [{"url": "http://h", "propagate_trace_context": False, "mystery": {}}],
                    "fallback": {"backoff": {"initial_ms": 10}, "max_total_backoff_ms": 100},
                    "open_responses": {"adapter": True},
                },
            },
        }
    )
    records = [r for r in caplog.records if r.name == "onwards.config"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]
    unknown, unused = (r.getMessage() for r in records)
    assert unknown == (
        "config.json: unknown fields, ignored (check their spelling): targets.a.key (did you mean 'keys'?), "
        "targets.b.providers[0].mystery, extra"
    )
    assert (
        unused
        == "config.json: fields this gateway accepts but does not use: targets.b.open_responses.adapter"
    )


def test_nothing_is_logged_for_a_config_without_unused_fields(caplog):
    caplog.set_level(logging.DEBUG, logger="onwards.config")
    parse({"targets": {"a": {"url": "http://h", "rate_limit": None}}})
    assert [r for r in caplog.records if r.name == "onwards.config"] == []


def test_long_lists_of_unknown_fields_are_summarised(caplog):
    caplog.set_level(logging.DEBUG, logger="onwards.config")
    parse({"targets": {}, **{f"x{i}": i for i in range(60)}})
    (record,) = [r for r in caplog.records if r.name == "onwards.config"]
    assert record.getMessage().endswith("x49 and 10 more")


def test_parse_is_not_fooled_by_python_objects_in_unknown_fields():
    snap = parse_config({"targets": {}, "note": {1, 2}}, "x")
    assert len(snap.version) == 12


def test_config_error_is_raised_not_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="onwards.config")
    with pytest.raises(ConfigError):
        parse({"targets": {"a": {"url": "http://h", "odd": 1, "weight": -1}}})
    assert caplog.records == []
