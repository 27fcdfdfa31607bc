"""`open_responses` in the config: the adapter flag, the step limit, server-side tools, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from onwards.config.errors import ConfigError
from onwards.config.parse import parse_config
from onwards.proxy.plan import compile_config

TOOL = {
    "name": "lookup",
    "description": "Look a thing up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    "url": "http://127.0.0.1:9/lookup",
    "timeout_secs": 5,
    "headers": {"Authorization": "Bearer ${LOOKUP_TOKEN}"},
}


def _plan(target: dict[str, Any]) -> Any:
    snapshot = parse_config({"targets": {"m": target}}, "config.json")
    return compile_config(snapshot).targets["m"]


def test_pool_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKUP_TOKEN", "s3cret")
    plan = _plan(
        {
            "providers": [
                {"url": "http://a/v1", "open_responses": {"adapter": True}},
                {"url": "http://b/v1"},
            ],
            "open_responses": {"max_steps": 4, "tools": [TOOL]},
        }
    )
    assert plan.responses is not None
    assert plan.responses.max_steps == 4
    tool = plan.responses.tools["lookup"]
    assert tool.url == "http://127.0.0.1:9/lookup"
    assert tool.timeout_secs == 5.0
    assert tool.headers == (("Authorization", "Bearer s3cret"),)  # the secret came from the environment
    assert plan.responses.chat_tools["lookup"] == {
        "type": "function",
        "function": {"name": "lookup", "description": "Look a thing up", "parameters": TOOL["parameters"]},
    }


def test_single_provider_form_holds_everything_in_one_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKUP_TOKEN", "x")
    plan = _plan({"url": "http://a/v1", "open_responses": {"adapter": True, "tools": [TOOL]}})
    assert plan.responses is not None
    assert plan.responses.max_steps == 10
    assert list(plan.responses.tools) == ["lookup"]


@pytest.mark.parametrize(
    "target",
    [
        {"url": "http://a/v1"},
        {"url": "http://a/v1", "open_responses": {"adapter": False}},
        # The Rust gateway reads the flag from the first provider only; a pool-level one is ignored.
        {"providers": [{"url": "http://a/v1"}], "open_responses": {"adapter": True}},
        {"providers": [{"url": "http://a/v1"}, {"url": "http://b/v1", "open_responses": {"adapter": True}}]},
    ],
)
def test_adapter_off(target: dict[str, Any]) -> None:
    assert _plan(target).responses is None


@pytest.mark.parametrize(
    ("open_responses", "path", "detail"),
    [
        ({"adapter": True, "max_steps": 0}, "targets.m.open_responses.max_steps", ">= 1"),
        (
            {"adapter": True, "tools": [{**TOOL, "name": "a b"}]},
            "targets.m.open_responses.tools[0].name",
            "letters",
        ),
        (
            {"adapter": True, "tools": [{**TOOL, "url": "ftp://x"}]},
            "targets.m.open_responses.tools[0].url",
            "http",
        ),
        ({"adapter": True, "tools": [{**TOOL, "parameters": []}]}, "tools[0].parameters", "JSON schema"),
        ({"adapter": True, "tools": [{**TOOL, "timeout_secs": 0}]}, "tools[0].timeout_secs", "positive"),
        ({"adapter": True, "tools": [TOOL, TOOL]}, "tools[1].name", "twice"),
        ({"adapter": True, "tools": [{"name": "x"}]}, "tools[0].url", "required"),
        (
            {"adapter": True, "tools": [{**TOOL, "headers": {"X": "${UNSET_FOR_TEST}"}}]},
            "headers.X",
            "not set",
        ),
    ],
)
def test_bad_open_responses_names_the_field(
    open_responses: dict[str, Any], path: str, detail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKUP_TOKEN", "x")
    monkeypatch.delenv("UNSET_FOR_TEST", raising=False)
    with pytest.raises(ConfigError) as caught:
        _plan({"url": "http://a/v1", "open_responses": open_responses})
    assert path in str(caught.value)
    assert detail in str(caught.value)


def test_tools_on_a_pool_provider_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        _plan({"providers": [{"url": "http://a/v1", "open_responses": {"adapter": True, "max_steps": 3}}]})
    assert "targets.m.providers[0].open_responses.max_steps" in str(caught.value)
    assert "target's own" in str(caught.value)


def test_the_protocols_doc_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).parents[2] / "docs" / "protocols.md").read_text()
    [block] = [b for b in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL) if '"llama"' in b]
    monkeypatch.setenv("DOCS_TOOL_TOKEN", "t")
    plan = compile_config(parse_config(json.loads(block), "protocols.md")).targets["llama"]
    assert plan.responses is not None
    assert list(plan.responses.tools) == ["search_docs"]
