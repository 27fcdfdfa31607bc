"""The gateway configurations under test, as config-file dicts.

Limits, when present, are set so high that they never refuse: every request still pays for their
evaluation (a token bucket and a concurrency permit on both the key and the target), which is the
cost being measured.
"""

from __future__ import annotations

from typing import Any

from tests.bench.payloads import KEY, MODEL

HUGE_RATE = {"requests_per_second": 1_000_000, "burst_size": 1_000_000}
HUGE_CONCURRENCY = {"max_concurrent_requests": 100_000}
HUGE_TOKENS = {"tokens_per_minute": 1_000_000_000_000, "burst_tokens": 1_000_000_000_000}


def gateway_config(upstream_url: str, *, limits: bool, tokens: bool = False) -> dict[str, Any]:
    """One target, ``MODEL``, served by ``upstream_url`` and open to ``KEY``; with ``limits`` the key and
    the target each get a rate and a concurrency limit, with ``tokens`` a token limit as well."""
    target: dict[str, Any] = {"url": upstream_url, "keys": [KEY]}
    config: dict[str, Any] = {"targets": {MODEL: target}}
    if limits:
        target["rate_limit"] = dict(HUGE_RATE)
        target["concurrency_limit"] = dict(HUGE_CONCURRENCY)
        key: dict[str, Any] = {
            "key": KEY,
            "rate_limit": dict(HUGE_RATE),
            "concurrency_limit": dict(HUGE_CONCURRENCY),
        }
        config["auth"] = {"key_definitions": {"bench": key}}
        if tokens:
            target["token_limit"] = dict(HUGE_TOKENS)
            key["token_limit"] = dict(HUGE_TOKENS)
    return config
