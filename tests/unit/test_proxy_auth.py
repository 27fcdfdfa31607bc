"""Bearer parsing, access checks against a target's keys, and which models a token may list."""

from __future__ import annotations

import pytest

from onwards import errors
from onwards.config import Snapshot, parse_config
from onwards.errors import GatewayError
from onwards.proxy.auth import authenticate, bearer_token, visible_models


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (b"Bearer sk-123", "sk-123"),
        (b"bearer sk-123", "sk-123"),
        (b"BEARER sk-123", "sk-123"),
        (b"Bearer   sk-123  ", "sk-123"),
        (b"Bearer a", "a"),
    ],
)
def test_bearer_token_is_parsed(header, token):
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"Bearer",
        b"Bearer ",
        b"Bearer    ",
        b"Basic dXNlcjpwYXNz",
        b"Token sk-123",
        b"sk-123",
        b"Bearersk-1",
    ],
)
def test_no_bearer_token(header):
    assert bearer_token(header) is None


def test_non_ascii_token_is_no_token():
    assert bearer_token("Bearer clé".encode("latin-1")) is None


@pytest.fixture
def snapshot() -> Snapshot:
    return parse_config(
        {
            "auth": {
                "global_keys": [],
                "key_definitions": {
                    "premium": {"key": "sk-premium", "rate_limit": {"requests_per_second": 10}},
                    "basic": {"key": "sk-basic"},
                },
            },
            "targets": {
                "open": {"url": "http://a"},
                "keyed": {"url": "http://a", "keys": ["sk-literal"]},
                "premium-only": {"url": "http://a", "keys": ["premium"]},
                "nobody": {"url": "http://a", "keys": []},
            },
        },
        "test.json",
    )


def test_open_target_admits_anyone(snapshot):
    target = snapshot.targets["open"]
    assert authenticate(snapshot, target, None) is None
    assert authenticate(snapshot, target, "anything") is None


def test_open_target_still_finds_the_callers_key_definition(snapshot):
    # Per-key limits apply even on open targets, so the definition must be found.
    keydef = authenticate(snapshot, snapshot.targets["open"], "sk-premium")
    assert keydef is not None
    assert keydef.name == "premium"
    assert keydef.checks


def test_missing_token_on_keyed_target_is_401_unauthenticated(snapshot):
    with pytest.raises(GatewayError) as exc:
        authenticate(snapshot, snapshot.targets["keyed"], None)
    assert exc.value.status == 401
    assert exc.value.body == errors.UNAUTHENTICATED


def test_wrong_token_on_keyed_target_is_401_invalid_api_key(snapshot):
    with pytest.raises(GatewayError) as exc:
        authenticate(snapshot, snapshot.targets["keyed"], "sk-wrong")
    assert exc.value.status == 401
    assert exc.value.body == errors.INVALID_KEY
    # The rejected token is never echoed back.
    assert b"sk-wrong" not in exc.value.body


def test_literal_key_admits_without_a_definition(snapshot):
    assert authenticate(snapshot, snapshot.targets["keyed"], "sk-literal") is None


def test_key_definition_named_in_keys_admits_its_token_and_is_returned(snapshot):
    target = snapshot.targets["premium-only"]
    keydef = authenticate(snapshot, target, "sk-premium")
    assert keydef is not None and keydef.key == "sk-premium"
    # The definition's name is not itself a token.
    with pytest.raises(GatewayError) as exc:
        authenticate(snapshot, target, "premium")
    assert exc.value.body == errors.INVALID_KEY
    # Another definition's token does not open it either.
    with pytest.raises(GatewayError):
        authenticate(snapshot, target, "sk-basic")


def test_empty_key_list_admits_nobody(snapshot):
    for token in (None, "sk-premium", "sk-literal"):
        with pytest.raises(GatewayError) as exc:
            authenticate(snapshot, snapshot.targets["nobody"], token)
        assert exc.value.status == 401


def test_visible_models_filters_by_token(snapshot):
    assert visible_models(snapshot, None) == ["open"]
    assert visible_models(snapshot, "sk-wrong") == ["open"]
    assert visible_models(snapshot, "sk-literal") == ["open", "keyed"]
    assert visible_models(snapshot, "sk-premium") == ["open", "premium-only"]
    assert visible_models(snapshot, "sk-basic") == ["open"]


def test_global_keys_protect_targets_without_keys_and_join_targets_with_keys():
    snapshot = parse_config(
        {
            "auth": {"global_keys": ["sk-global"]},
            "targets": {"a": {"url": "http://a"}, "b": {"url": "http://b", "keys": ["sk-b"]}},
        },
        "test.json",
    )
    assert visible_models(snapshot, None) == []
    assert visible_models(snapshot, "sk-global") == ["a", "b"]
    assert visible_models(snapshot, "sk-b") == ["b"]
    with pytest.raises(GatewayError) as exc:
        authenticate(snapshot, snapshot.targets["a"], None)
    assert exc.value.body == errors.UNAUTHENTICATED
