"""The provider "format" field: where it is read, its default, and what it changes in upstream auth."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from onwards.config import ConfigError, parse_config


def _targets(doc: dict) -> dict:
    return parse_config({"targets": doc}, "config.json").targets


def test_default_is_openai() -> None:
    provider = _targets({"m": {"url": "http://h", "onwards_key": "k"}})["m"].providers[0]
    assert provider.format == "openai"
    assert provider.auth_header == ("Authorization", "Bearer k")


def test_single_target_anthropic_uses_x_api_key() -> None:
    provider = _targets({"m": {"url": "http://h", "onwards_key": "k", "format": "anthropic"}})["m"].providers[
        0
    ]
    assert provider.format == "anthropic"
    assert provider.auth_header == ("x-api-key", "k")


def test_explicit_auth_header_still_wins_for_anthropic() -> None:
    spec = {
        "url": "http://h",
        "onwards_key": "k",
        "format": "anthropic",
        "upstream_auth_header_name": "Authorization",
        "upstream_auth_header_prefix": "Bearer ",
    }
    assert _targets({"m": spec})["m"].providers[0].auth_header == ("Authorization", "Bearer k")


def test_pool_format_is_the_default_of_its_providers() -> None:
    spec = {
        "format": "anthropic",
        "providers": [{"url": "http://a"}, {"url": "http://b", "format": "openai"}],
    }
    providers = _targets({"m": spec})["m"].providers
    assert [p.format for p in providers] == ["anthropic", "openai"]


def test_legacy_list_reads_each_format() -> None:
    providers = _targets({"m": [{"url": "http://a", "format": "anthropic"}, {"url": "http://b"}]})[
        "m"
    ].providers
    assert [p.format for p in providers] == ["anthropic", "openai"]


@pytest.mark.parametrize("value", ["claude", 1, "OpenAI"])
def test_bad_format_is_refused_with_its_path(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        _targets({"m": {"url": "http://h", "format": value}})
    assert "targets.m.format" in str(caught.value)


def test_strict_mode_refuses_anthropic_providers() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"strict_mode": True, "targets": {"m": {"url": "http://h", "format": "anthropic"}}}, "config.json"
        )
    assert "targets.m" in str(caught.value) and "strict_mode" in str(caught.value)


def test_the_protocols_doc_anthropic_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).parents[2] / "docs" / "protocols.md").read_text()
    [block] = [b for b in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL) if '"coder"' in b]
    monkeypatch.setenv("ANTHROPIC_KEY", "sk-ant-test")
    targets = parse_config(json.loads(block), "protocols.md").targets
    assert targets["claude"].providers[0].auth_header == ("x-api-key", "sk-ant-test")
    assert [p.format for p in targets["coder"].providers] == ["openai", "anthropic"]
