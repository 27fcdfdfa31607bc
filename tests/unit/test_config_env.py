"""`${VAR}` references in config strings are filled from the environment at load."""

from __future__ import annotations

import pytest

from onwards.config import ConfigError, parse_config
from onwards.config.env import EnvReferenceError, expand_env

ENV = {"KEY": "sk-live", "HOST": "api.example.com", "EMPTY": "", "TRICKY": "${KEY}"}


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("plain", "plain"),
        ("", ""),
        ("${KEY}", "sk-live"),
        ("Bearer ${KEY}!", "Bearer sk-live!"),
        ("https://${HOST}/v1", "https://api.example.com/v1"),
        ("${HOST}${KEY}", "api.example.comsk-live"),
        ("${EMPTY}", ""),
        ("$${KEY}", "${KEY}"),
        ("price: $5", "price: $5"),
        ("$", "$"),
        ("$$", "$$"),
        ("$KEY", "$KEY"),
        ("a$${b}$${KEY}", "a${b}${KEY}"),
        ("$$${KEY}", "$${KEY}"),
        # Values are not scanned again, so a variable holding "${...}" stays literal.
        ("${TRICKY}", "${KEY}"),
    ],
)
def test_expand_env(text, expanded):
    assert expand_env(text, ENV) == expanded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${MISSING}", "environment variable 'MISSING' is not set"),
        ("ok ${KEY} ${ALSO_MISSING}", "environment variable 'ALSO_MISSING' is not set"),
        ("${KEY", "'${' without a closing '}' (write '$${' for a literal '${')"),
        (
            "${}",
            "'${...}' does not hold a valid environment variable name (letters, digits and '_'; write "
            "'$${' for a literal '${')",
        ),
        (
            "${1ABC}",
            "'${...}' does not hold a valid environment variable name (letters, digits and '_'; write "
            "'$${' for a literal '${')",
        ),
        (
            "${A-B}",
            "'${...}' does not hold a valid environment variable name (letters, digits and '_'; write "
            "'$${' for a literal '${')",
        ),
    ],
)
def test_expand_env_errors(text, message):
    with pytest.raises(EnvReferenceError) as info:
        expand_env(text, ENV)
    assert str(info.value) == message


@pytest.fixture
def env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(f"ONWARDS_TEST_{name}", value)
    monkeypatch.delenv("ONWARDS_TEST_MISSING", raising=False)


def test_references_are_filled_in_every_kind_of_string_field(env):
    snap = parse_config(
        {
            "auth": {
                "global_keys": ["${ONWARDS_TEST_KEY}-global"],
                "key_definitions": {
                    "user": {"key": "${ONWARDS_TEST_KEY}-user", "labels": {"host": "${ONWARDS_TEST_HOST}"}}
                },
            },
            "targets": {
                "m": {
                    "strategy": "${ONWARDS_TEST_EMPTY}priority",
                    "keys": ["${ONWARDS_TEST_KEY}-target"],
                    "response_headers": {"X-Host": "${ONWARDS_TEST_HOST}"},
                    "providers": [
                        {
                            "url": "https://${ONWARDS_TEST_HOST}/v1",
                            "onwards_key": "${ONWARDS_TEST_KEY}",
                            "onwards_model": "model-$${literal}",
                        }
                    ],
                }
            },
        },
        "config.json",
    )
    target = snap.targets["m"]
    assert target.strategy == "priority"
    assert target.keys == frozenset({"sk-live-target", "sk-live-global"})
    assert target.response_headers == (("X-Host", "api.example.com"),)
    (p,) = target.providers
    assert p.url == "https://api.example.com/v1/"
    assert p.auth_header == ("Authorization", "Bearer sk-live")
    assert p.onwards_model == "model-${literal}"
    user = snap.keys_by_token["sk-live-user"]
    assert user.labels == (("host", "api.example.com"),)


def test_missing_variable_names_variable_and_field(env):
    doc = {
        "targets": {"gpt-4": {"providers": [{"url": "http://h", "onwards_key": "${ONWARDS_TEST_MISSING}"}]}}
    }
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "config.json")
    assert str(info.value) == (
        "config.json: targets.gpt-4.providers[0].onwards_key: "
        "environment variable 'ONWARDS_TEST_MISSING' is not set"
    )


def test_unterminated_reference_names_the_field(env):
    with pytest.raises(ConfigError) as info:
        parse_config({"targets": {"m": {"url": "http://h", "keys": ["ok", "${ONWARDS_TEST_KEY"]}}}, "c.json")
    assert str(info.value) == (
        "c.json: targets.m.keys[1]: '${' without a closing '}' (write '$${' for a literal '${')"
    )


def test_variable_set_to_empty_string_then_fails_the_field_check(env):
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"targets": {"m": {"url": "http://h", "onwards_key": "${ONWARDS_TEST_EMPTY}"}}}, "c.json"
        )
    assert str(info.value) == (
        "c.json: targets.m.onwards_key: must be a non-empty string "
        "(leave the field out to send no upstream credential)"
    )


def test_variable_filled_url_is_validated_after_filling(env, monkeypatch):
    monkeypatch.setenv("ONWARDS_TEST_URL", "not-a-url")
    with pytest.raises(ConfigError) as info:
        parse_config({"targets": {"m": {"url": "${ONWARDS_TEST_URL}"}}}, "c.json")
    assert str(info.value) == "c.json: targets.m.url: must be an absolute http(s) URL"


def test_environment_is_read_at_each_load(monkeypatch):
    doc = {"targets": {"m": {"url": "http://h", "onwards_key": "${ONWARDS_TEST_ROTATING}"}}}
    monkeypatch.setenv("ONWARDS_TEST_ROTATING", "one")
    assert parse_config(doc, "c").targets["m"].providers[0].auth_header == ("Authorization", "Bearer one")
    monkeypatch.setenv("ONWARDS_TEST_ROTATING", "two")
    assert parse_config(doc, "c").targets["m"].providers[0].auth_header == ("Authorization", "Bearer two")


def test_object_keys_are_not_substituted(env):
    snap = parse_config({"targets": {"${ONWARDS_TEST_KEY}": {"url": "http://h"}}}, "c")
    assert list(snap.targets) == ["${ONWARDS_TEST_KEY}"]


def test_unknown_fields_are_not_expanded(env):
    # A field nobody reads cannot fail the load over a variable nobody needs.
    snap = parse_config({"targets": {"m": {"url": "http://h", "note": "${ONWARDS_TEST_MISSING}"}}}, "c")
    assert "m" in snap.targets
