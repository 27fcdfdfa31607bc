"""Routing rules on key-definition labels, after the Rust onwards' load_balancer.rs rule tests
and target.rs parsing tests: deny (403) and redirect, first match wins, all labels must match,
evaluated after auth and before admission (the served alias's limits apply)."""

from __future__ import annotations

from typing import Any

import pytest

from onwards.config import parse_config
from onwards.config.rules import first_match
from tests.support.app_client import app_client
from tests.support.mock_upstream import MockUpstream

CHAT = "/v1/chat/completions"


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def rules_of(rules: list[dict[str, Any]]):
    doc = {"targets": {"m": {"providers": [], "routing_rules": rules}, "mini": {"url": "http://x"}}}
    return parse_config(doc, "c.json").targets["m"].routing_rules


def test_routing_rules_empty_by_default():
    assert parse_config({"targets": {"m": {"providers": []}}}, "c.json").targets["m"].routing_rules == ()


def test_routing_rules_parse_deny_and_redirect():
    rules = rules_of(
        [
            {"match_labels": {"purpose": "playground"}, "action": {"type": "deny"}},
            {"match_labels": {"purpose": "batch"}, "action": {"type": "redirect", "target": "mini"}},
        ]
    )
    assert [(r.action, r.target) for r in rules] == [("deny", None), ("redirect", "mini")]
    assert rules[0].match == labels(purpose="playground")


def test_no_rule_matches_means_allow():
    rules = rules_of([{"match_labels": {"purpose": "playground"}, "action": {"type": "deny"}}])
    assert first_match(rules, labels(purpose="prod")) is None
    assert first_match(rules, frozenset()) is None


def test_first_match_wins_and_all_labels_must_match_extra_labels_ok():
    rules = rules_of(
        [
            {"match_labels": {"tier": "free", "purpose": "batch"}, "action": {"type": "deny"}},
            {"match_labels": {"tier": "free"}, "action": {"type": "redirect", "target": "mini"}},
            {"match_labels": {}, "action": {"type": "deny"}},
        ]
    )
    first = first_match(rules, labels(tier="free", purpose="batch", team="x"))
    assert first is not None and first.action == "deny"
    second = first_match(rules, labels(tier="free", purpose="chat"))
    assert second is not None and second.action == "redirect"
    assert first_match(rules, labels(tier="paid")) is rules[2]  # {} matches every key


@pytest.fixture
def mock_a(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("a")


@pytest.fixture
def mock_b(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("b")


def config(mock_a: MockUpstream, mock_b: MockUpstream) -> dict[str, Any]:
    return {
        "auth": {
            "key_definitions": {
                "play": {"key": "sk-play", "labels": {"purpose": "playground"}},
                "batch": {"key": "sk-batch", "labels": {"purpose": "batch"}},
                "prod": {"key": "sk-prod", "labels": {"purpose": "prod"}},
            }
        },
        "targets": {
            "big": {
                "keys": ["play", "batch", "prod", "sk-plain"],
                "routing_rules": [
                    {"match_labels": {"purpose": "playground"}, "action": {"type": "deny"}},
                    {"match_labels": {"purpose": "batch"}, "action": {"type": "redirect", "target": "mini"}},
                ],
                "providers": [{"url": mock_a.url}],
            },
            "mini": {
                "keys": ["sk-other"],
                "rate_limit": {"requests_per_second": 0.001, "burst_size": 1},
                "providers": [{"url": mock_b.url}],
            },
        },
    }


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_deny_rule_is_403_forbidden_and_nothing_is_forwarded(write_config, mock_a, mock_b):
    async with app_client(write_config(config(mock_a, mock_b))) as client:
        r = await client.post(CHAT, json={"model": "big", "messages": []}, headers=auth("sk-play"))
    assert r.status_code == 403
    assert r.json() == {
        "error": {"message": "Forbidden", "type": "invalid_request_error", "param": None, "code": "forbidden"}
    }
    assert mock_a.request_count == mock_b.request_count == 0


async def test_redirect_serves_the_other_alias_with_its_limits(write_config, mock_a, mock_b):
    async with app_client(write_config(config(mock_a, mock_b))) as client:
        first = await client.post(CHAT, json={"model": "big", "messages": []}, headers=auth("sk-batch"))
        second = await client.post(CHAT, json={"model": "big", "messages": []}, headers=auth("sk-batch"))
    assert first.status_code == 200
    assert first.headers["x-mock-name"] == "b"
    # The redirected alias's bucket (burst 1) applies, not the asked-for alias's (none).
    assert second.status_code == 429
    assert mock_a.request_count == 0 and mock_b.request_count == 1


async def test_keys_without_matching_labels_or_definitions_are_served_as_asked(write_config, mock_a, mock_b):
    async with app_client(write_config(config(mock_a, mock_b))) as client:
        prod = await client.post(CHAT, json={"model": "big", "messages": []}, headers=auth("sk-prod"))
        plain = await client.post(CHAT, json={"model": "big", "messages": []}, headers=auth("sk-plain"))
    assert prod.headers["x-mock-name"] == plain.headers["x-mock-name"] == "a"


async def test_rules_are_evaluated_after_auth(write_config, mock_a, mock_b):
    async with app_client(write_config(config(mock_a, mock_b))) as client:
        r = await client.post(CHAT, json={"model": "big", "messages": []})
    assert r.status_code == 401
