"""Every config example in the Rust onwards documentation loads here, with the meaning it has there.

The JSON below is copied from the reference docs (onwards-guide.txt, onwards-load-balancing.txt,
onwards-readme.md). One guide example ("priced-model") is cut off in the source; its missing
closing braces are added. Fragments that only show a `rate_limit` object are wrapped in a target.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from onwards.config import ConcurrencyCheck, FallbackSpec, RateCheck, Snapshot, parse_config_bytes


def load(text: str) -> Snapshot:
    return parse_config_bytes(text.encode(), "config.json")


GUIDE_QUICKSTART = """
{
"targets": {
"gpt-4": {
"url": "https://api.openai.com",
"onwards_key": "sk-your-openai-key",
"onwards_model": "gpt-4"
},
"claude-3": {
"url": "https://api.anthropic.com",
"onwards_key": "sk-ant-your-anthropic-key"
},
"local-model": {
"url": "http://localhost:8080"
}
}
}
"""

README_QUICKSTART = """
{
  "targets": {
    "gpt-4": {
      "url": "https://api.openai.com",
      "onwards_key": "sk-your-openai-key",
      "onwards_model": "gpt-4"
    }
  }
}
"""

GLOBAL_KEYS = """
{
"auth": {
"global_keys": ["global-api-key-1", "global-api-key-2"]
},
"targets": {
"gpt-4": {
"url": "https://api.openai.com",
"onwards_key": "sk-your-openai-key",
"keys": ["target-specific-key"]
}
}
}
"""

PER_TARGET_AUTH = """
{
"targets": {
"secure-gpt-4": {
"url": "https://api.openai.com",
"onwards_key": "sk-your-openai-key",
"keys": ["secure-key-1", "secure-key-2"]
},
"open-local": {
"url": "http://localhost:8080"
}
}
}
"""

CUSTOM_HEADER_NAME = """
{
"targets": {
"custom-api": {
"url": "https://api.custom-provider.com",
"onwards_key": "your-api-key-123",
"upstream_auth_header_name": "X-API-Key"
}
}
}
"""

CUSTOM_PREFIX = """
{
"targets": {
"api-with-prefix": {
"url": "https://api.provider1.com",
"onwards_key": "token-xyz",
"upstream_auth_header_prefix": "ApiKey "
},
"api-without-prefix": {
"url": "https://api.provider2.com",
"onwards_key": "plain-key-456",
"upstream_auth_header_prefix": ""
}
}
}
"""

CUSTOM_NAME_AND_PREFIX = """
{
"targets": {
"fully-custom": {
"url": "https://api.custom.com",
"onwards_key": "secret-key",
"upstream_auth_header_name": "X-Custom-Auth",
"upstream_auth_header_prefix": "Token "
}
}
}
"""

DEFAULT_AUTH = """
{
"targets": {
"standard-api": {
"url": "https://api.openai.com",
"onwards_key": "sk-openai-key"
}
}
}
"""

RATE_LIMITING = """
{
"targets": {
"rate-limited-model": {
"url": "https://api.provider.com",
"key": "your-api-key",
"rate_limit": {
"requests_per_second": 5.0,
"burst_size": 10
}
}
}
}
"""

RATE_FRAGMENT_1 = """
{"targets": {"m": {"url": "https://api.provider.com",
"rate_limit": {
"requests_per_second": 1.0,
"burst_size": 5
}
}}}
"""

RATE_FRAGMENT_100 = """
{"targets": {"m": {"url": "https://api.provider.com",
"rate_limit": {
"requests_per_second": 100.0,
"burst_size": 200
}
}}}
"""

PER_KEY_RATE_LIMITS = """
{
"auth": {
"global_keys": ["fallback-key"],
"key_definitions": {
"basic_user": {
"key": "sk-user-12345",
"rate_limit": {
"requests_per_second": 10,
"burst_size": 20
}
},
"premium_user": {
"key": "sk-premium-67890",
"rate_limit": {
"requests_per_second": 100,
"burst_size": 200
}
},
"enterprise_user": {
"key": "sk-enterprise-abcdef",
"rate_limit": {
"requests_per_second": 500,
"burst_size": 1000
}
}
}
},
"targets": {
"gpt-4": {
"url": "https://api.openai.com",
"onwards_key": "sk-your-openai-key",
"keys": ["basic_user", "premium_user", "enterprise_user", "fallback-key"]
}
}
}
"""

PER_TARGET_CONCURRENCY = """
{
"targets": {
"resource-limited-model": {
"url": "https://api.provider.com",
"onwards_key": "your-api-key",
"concurrency_limit": {
"max_concurrent_requests": 5
}
}
}
}
"""

PER_KEY_CONCURRENCY = """
{
"auth": {
"key_definitions": {
"basic_user": {
"key": "sk-user-12345",
"concurrency_limit": {
"max_concurrent_requests": 2
}
},
"premium_user": {
"key": "sk-premium-67890",
"concurrency_limit": {
"max_concurrent_requests": 10
},
"rate_limit": {
"requests_per_second": 100,
"burst_size": 200
}
}
}
},
"targets": {
"gpt-4": {
"url": "https://api.openai.com",
"onwards_key": "sk-your-openai-key"
}
}
}
"""

RATE_AND_CONCURRENCY = """
{
"targets": {
"balanced-model": {
"url": "https://api.provider.com",
"onwards_key": "your-api-key",
"rate_limit": {
"requests_per_second": 10,
"burst_size": 20
},
"concurrency_limit": {
"max_concurrent_requests": 5
}
}
}
}
"""

PRICING_HEADERS = """
{
"targets": {
"priced-model": {
"url": "https://api.provider.com",
"key": "your-api-key",
"response_headers": {
"Input-Price-Per-Token": "0.0001",
"Output-Price-Per-Token": "0.0002"
}
}
}
}
"""

SANITIZE_SINGLE = """
{
"targets": {
"gpt-4": {
"url": "https://api.openai.com",
"onwards_key": "sk-your-key",
"onwards_model": "gpt-4-turbo-2024-04-09",
"sanitize_response": true
}
}
}
"""

SANITIZE_POOL = """
{
"targets": {
"gpt-4": {
"sanitize_response": true,
"providers": [
{
"url": "https://api1.example.com",
"onwards_key": "sk-key-1"
},
{
"url": "https://api2.example.com",
"onwards_key": "sk-key-2"
}
]
}
}
}
"""

LOAD_BALANCING = """
{
  "targets": {
    "gpt-4": {
      "strategy": "weighted_random",
      "fallback": {
        "enabled": true,
        "on_status": [429, 5],
        "on_rate_limit": true
      },
      "providers": [
        { "url": "https://api.openai.com", "onwards_key": "sk-key-1", "weight": 3 },
        { "url": "https://api.openai.com", "onwards_key": "sk-key-2", "weight": 1 }
      ]
    }
  }
}
"""

PRIMARY_BACKUP = """
{
  "targets": {
    "gpt-4": {
      "strategy": "priority",
      "fallback": { "enabled": true, "on_status": [5], "on_rate_limit": true },
      "providers": [
        { "url": "https://primary.example.com", "onwards_key": "sk-primary" },
        { "url": "https://backup.example.com", "onwards_key": "sk-backup" }
      ]
    }
  }
}
"""

POOL_RATE_LIMIT = """
{
  "targets": {
    "gpt-4": {
      "rate_limit": { "requests_per_second": 100, "burst_size": 200 },
      "providers": [
        { "url": "https://api.openai.com", "onwards_key": "sk-key-1" },
        { "url": "https://api.openai.com", "onwards_key": "sk-key-2" }
      ]
    }
  }
}
"""

BACKWARDS_COMPAT_ONE_LINE = """
{ "targets": { "gpt-4": { "url": "https://api.openai.com", "onwards_key": "sk-key" } } }
"""

BACKWARDS_COMPAT = """
{
  "targets": {
    "gpt-4": {
      "url": "https://api.openai.com",
      "onwards_key": "sk-key"
    }
  }
}
"""

ALL_EXAMPLES = {
    name: value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, str)
}


@pytest.mark.parametrize("name", sorted(ALL_EXAMPLES))
def test_every_reference_example_loads(name):
    snap = load(ALL_EXAMPLES[name])
    assert snap.targets
    for alias, target in snap.targets.items():
        assert target.alias == alias
        assert target.providers
        assert all(
            p.url.startswith(("http://", "https://")) and p.url.endswith("/") for p in target.providers
        )


def test_quickstart():
    targets = load(GUIDE_QUICKSTART).targets
    assert list(targets) == ["gpt-4", "claude-3", "local-model"]
    gpt = targets["gpt-4"].providers[0]
    assert (gpt.url, gpt.onwards_model, gpt.auth_header) == (
        "https://api.openai.com/",
        "gpt-4",
        ("Authorization", "Bearer sk-your-openai-key"),
    )
    assert targets["claude-3"].providers[0].auth_header == (
        "Authorization",
        "Bearer sk-ant-your-anthropic-key",
    )
    assert targets["local-model"].providers[0].auth_header is None
    assert all(t.keys is None for t in targets.values())
    assert load(README_QUICKSTART).targets["gpt-4"].providers[0] == gpt


def test_global_and_per_target_keys():
    assert load(GLOBAL_KEYS).targets["gpt-4"].keys == frozenset(
        {"target-specific-key", "global-api-key-1", "global-api-key-2"}
    )
    targets = load(PER_TARGET_AUTH).targets
    assert targets["secure-gpt-4"].keys == frozenset({"secure-key-1", "secure-key-2"})
    assert targets["open-local"].keys is None


def test_upstream_auth_header_examples():
    assert load(CUSTOM_HEADER_NAME).targets["custom-api"].providers[0].auth_header == (
        "X-API-Key",
        "Bearer your-api-key-123",
    )
    targets = load(CUSTOM_PREFIX).targets
    assert targets["api-with-prefix"].providers[0].auth_header == ("Authorization", "ApiKey token-xyz")
    assert targets["api-without-prefix"].providers[0].auth_header == ("Authorization", "plain-key-456")
    assert load(CUSTOM_NAME_AND_PREFIX).targets["fully-custom"].providers[0].auth_header == (
        "X-Custom-Auth",
        "Token secret-key",
    )
    assert load(DEFAULT_AUTH).targets["standard-api"].providers[0].auth_header == (
        "Authorization",
        "Bearer sk-openai-key",
    )


def test_rate_limit_examples_including_fractional_rates():
    target = load(RATE_LIMITING).targets["rate-limited-model"]
    assert target.checks == (RateCheck("target", "target:rate-limited-model", 5.0, 10),)
    # The guide's "key" is not an onwards field; as in the Rust gateway no credential is sent.
    assert target.providers[0].auth_header is None
    assert load(RATE_FRAGMENT_1).targets["m"].checks == (RateCheck("target", "target:m", 1.0, 5),)
    assert load(RATE_FRAGMENT_100).targets["m"].checks == (RateCheck("target", "target:m", 100.0, 200),)


def test_per_key_rate_limits_with_definition_names_in_keys():
    snap = load(PER_KEY_RATE_LIMITS)
    assert snap.targets["gpt-4"].keys == frozenset(
        {"sk-user-12345", "sk-premium-67890", "sk-enterprise-abcdef", "fallback-key"}
    )
    assert snap.keys_by_token["sk-premium-67890"].checks == (
        RateCheck("key", "key:premium_user", 100.0, 200),
    )
    assert snap.keys_by_token["sk-enterprise-abcdef"].name == "enterprise_user"
    assert "fallback-key" not in snap.keys_by_token


def test_concurrency_examples():
    assert load(PER_TARGET_CONCURRENCY).targets["resource-limited-model"].checks == (
        ConcurrencyCheck("target", "target:resource-limited-model", 5),
    )
    snap = load(PER_KEY_CONCURRENCY)
    assert snap.targets["gpt-4"].keys is None  # key definitions alone do not lock the target
    assert snap.keys_by_token["sk-user-12345"].checks == (ConcurrencyCheck("key", "key:basic_user", 2),)
    assert snap.keys_by_token["sk-premium-67890"].checks == (
        RateCheck("key", "key:premium_user", 100.0, 200),
        ConcurrencyCheck("key", "key:premium_user", 10),
    )
    assert load(RATE_AND_CONCURRENCY).targets["balanced-model"].checks == (
        RateCheck("target", "target:balanced-model", 10.0, 20),
        ConcurrencyCheck("target", "target:balanced-model", 5),
    )


def test_pricing_headers():
    provider = load(PRICING_HEADERS).targets["priced-model"].providers[0]
    assert provider.response_headers == (
        ("Input-Price-Per-Token", "0.0001"),
        ("Output-Price-Per-Token", "0.0002"),
    )


def test_sanitize_examples():
    single = load(SANITIZE_SINGLE).targets["gpt-4"]
    assert single.sanitize_response and single.providers[0].sanitize_response
    assert single.providers[0].onwards_model == "gpt-4-turbo-2024-04-09"
    pool = load(SANITIZE_POOL).targets["gpt-4"]
    assert pool.sanitize_response
    assert [p.sanitize_response for p in pool.providers] == [True, True]
    assert [p.auth_header for p in pool.providers] == [
        ("Authorization", "Bearer sk-key-1"),
        ("Authorization", "Bearer sk-key-2"),
    ]


def test_load_balancing_examples():
    target = load(LOAD_BALANCING).targets["gpt-4"]
    assert target.strategy == "weighted_random"
    assert target.fallback == FallbackSpec(enabled=True, on_status=(429, 5), on_rate_limit=True)
    assert target.weights == (3, 1)
    backup = load(PRIMARY_BACKUP).targets["gpt-4"]
    assert backup.strategy == "priority"
    assert [p.url for p in backup.providers] == [
        "https://primary.example.com/",
        "https://backup.example.com/",
    ]
    assert backup.fallback.matches(502) and not backup.fallback.matches(429)
    limited = load(POOL_RATE_LIMIT).targets["gpt-4"]
    assert limited.checks == (RateCheck("target", "target:gpt-4", 100.0, 200),)
    assert all(p.checks == () for p in limited.providers)


def test_backwards_compatible_single_provider():
    one_line = load(BACKWARDS_COMPAT_ONE_LINE).targets["gpt-4"]
    spread = load(BACKWARDS_COMPAT).targets["gpt-4"]
    assert one_line == spread
    assert one_line.strategy == "weighted_random"
    assert one_line.fallback == FallbackSpec()
    assert len(one_line.providers) == 1


def _doc_examples() -> list[str]:
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    # Blocks mentioning "targets" are whole files; the rest are fragments of one field.
    return [block for block in blocks if '"targets"' in block]


def test_docs_configuration_examples_load(monkeypatch):
    examples = _doc_examples()
    assert len(examples) >= 5  # the minimal file, the three shapes, keys
    for name in (
        "OPENAI_API_KEY",
        "PRIMARY_KEY",
        "BACKUP_KEY",
        "KEY_1",
        "KEY_2",
        "ANTHROPIC_KEY",
        "BASIC_TOKEN",
    ):
        monkeypatch.setenv(name, f"sk-{name.lower().replace('_', '-')}")
    for block in examples:
        assert load(block).targets
