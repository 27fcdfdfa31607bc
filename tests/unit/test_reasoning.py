"""The reasoning contract and reasoning_translation, after the Rust onwards' reasoning.rs tests."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from onwards.config import ConfigError, Provider, parse_config
from onwards.errors import GatewayError
from onwards.reasoning import check_contract, check_providers, surface_of, translated_body, translation_for

SGLANG = {
    "chat_completions": {
        "unsupported_efforts": ["minimal", "xhigh", "max"],
        "writes": [
            {
                "target_path": "/chat_template_kwargs/thinking",
                "values": {"none": False, "low": True, "medium": True, "high": True},
            }
        ],
    }
}
BUDGET = {
    "chat_completions": {
        "unsupported_efforts": ["none", "minimal", "low", "medium", "xhigh", "max"],
        "writes": [
            {"target_path": "/reasoning_effort", "values": {"high": "high"}},
            {"target_path": "/thinking_token_budget", "values": {"high": 8192}},
        ],
    }
}
RESPONSES_BUDGET = {"responses": BUDGET["chat_completions"]}


def providers(*translations: dict) -> tuple[Provider, ...]:
    spec = {
        "providers": [{"url": f"http://p{i}", "reasoning_translation": t} for i, t in enumerate(translations)]
    }
    return parse_config({"targets": {"m": spec}}, "c.json").targets["m"].providers


def refused(fn: Any, *args: Any) -> tuple[int, dict]:
    with pytest.raises(GatewayError) as caught:
        fn(*args)
    return caught.value.status, orjson.loads(caught.value.body)["error"]


def translate(translation: dict, surface: str, body: dict) -> dict:
    (provider,) = providers(translation)
    request = check_contract(surface, body)  # type: ignore[arg-type]
    assert request is not None
    check_providers((provider,), request)
    t = translation_for(provider, request.surface)
    assert t is not None
    return translated_body(t, request, body)


def test_surfaces_by_path_ending():
    assert surface_of("/v1/chat/completions") == "chat"
    assert surface_of("/chat/completions/") == "chat"
    assert surface_of("/v1/responses") == "responses"
    assert surface_of("/v1/completions") == "completions"
    assert surface_of("/v1/embeddings") is None


def test_accepts_explicit_multi_write_config_covering_all_openai_efforts():
    providers(
        {
            "chat_completions": {
                "unsupported_efforts": [],
                "writes": [
                    {
                        "target_path": "/reasoning_effort",
                        "values": {
                            e: e for e in ("none", "minimal", "low", "medium", "high", "xhigh", "max")
                        },
                    },
                    {
                        "target_path": "/thinking_token_budget",
                        "values": {
                            "none": 0,
                            "minimal": 1,
                            "low": 2,
                            "medium": 3,
                            "high": 4,
                            "xhigh": 5,
                            "max": 6,
                        },
                    },
                ],
            }
        }
    )


def test_translates_chat_reasoning_effort_to_sglang_boolean():
    body = {"model": "k", "messages": [{"role": "user", "content": "Hello"}], "reasoning_effort": "none"}
    out = translate(SGLANG, "chat", body)
    assert out["chat_template_kwargs"] == {"thinking": False}
    assert "reasoning_effort" not in out
    assert body["reasoning_effort"] == "none"  # the original is untouched (rebuilt per attempt)


def test_omitted_reasoning_effort_does_not_change_body():
    assert check_contract("chat", {"model": "k", "messages": []}) is None
    assert check_contract("chat", {"model": "k", "reasoning_effort": None}) is None


def test_supports_object_shaped_provider_values():
    translation = {
        "chat_completions": {
            "unsupported_efforts": ["minimal", "low", "medium", "xhigh", "max"],
            "writes": [
                {
                    "target_path": "/thinking",
                    "values": {"none": {"type": "disabled"}, "high": {"type": "enabled"}},
                }
            ],
        }
    }
    out = translate(translation, "chat", {"model": "m", "reasoning_effort": "high"})
    assert out == {"model": "m", "thinking": {"type": "enabled"}}


def test_responses_translation_removes_empty_reasoning_parent_but_keeps_siblings():
    translation = {
        "responses": {
            "unsupported_efforts": [],
            "writes": [
                {
                    "target_path": "/thinking",
                    "values": {e: e for e in ("none", "minimal", "low", "medium", "high", "xhigh", "max")},
                }
            ],
        }
    }
    assert translate(translation, "responses", {"reasoning": {"effort": "low"}}) == {"thinking": "low"}
    kept = translate(translation, "responses", {"reasoning": {"effort": "low", "summary": "auto"}})
    assert kept == {"reasoning": {"summary": "auto"}, "thinking": "low"}


def test_unmapped_effort_is_unsupported_value():
    status, error = refused(translate, SGLANG, "chat", {"reasoning_effort": "max"})
    assert status == 400
    assert error["code"] == "unsupported_value"
    assert error["param"] == "reasoning_effort"
    assert error["message"] == (
        "Reasoning effort 'max' is not supported by this provider. Supported values: none, low, medium, high."
    )


def test_unknown_effort_is_invalid_value_with_parameter():
    status, error = refused(check_contract, "chat", {"reasoning_effort": "ultra"})
    assert (status, error["code"], error["param"]) == (400, "invalid_value", "reasoning_effort")
    assert error["message"] == (
        "Invalid value 'ultra' for 'reasoning_effort'. "
        "Expected one of: none, minimal, low, medium, high, xhigh, max."
    )


def test_non_string_effort_is_invalid_type():
    status, error = refused(check_contract, "chat", {"reasoning_effort": False})
    assert (status, error["code"], error["message"]) == (
        400,
        "invalid_type",
        "Invalid type for 'reasoning_effort'. Expected a string.",
    )


def test_non_object_reasoning_on_responses_is_invalid_type_and_null_is_fine():
    status, error = refused(check_contract, "responses", {"reasoning": "high"})
    assert (status, error["param"], error["code"]) == (400, "reasoning", "invalid_type")
    assert check_contract("responses", {"reasoning": None}) is None
    assert check_contract("responses", {"reasoning": {"summary": "auto"}}) is None


def test_responses_errors_name_reasoning_effort_path():
    _status, error = refused(check_contract, "responses", {"reasoning": {"effort": "ultra"}})
    assert error["param"] == "reasoning.effort"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"chat_template_kwargs": {"thinking": True}}, "chat_template_kwargs.thinking"),
        ({"chat_template_kwargs": {"enable_thinking": True}}, "chat_template_kwargs.enable_thinking"),
        ({"chat_template_kwargs": None}, "chat_template_kwargs"),
        ({"thinking": {"type": "enabled"}}, "thinking"),
        ({"thinking_token_budget": 5}, "thinking_token_budget"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
    ],
)
def test_chat_rejects_provider_specific_reasoning_parameters(body, param):
    status, error = refused(check_contract, "chat", body)
    assert (status, error["code"], error["param"]) == (400, "unsupported_parameter", param)
    assert error["message"] == f"Unsupported parameter '{param}'; use 'reasoning_effort'."


def test_responses_rejects_reasoning_effort_spelling():
    _status, error = refused(check_contract, "responses", {"reasoning_effort": "high"})
    assert error["message"] == "Unsupported parameter 'reasoning_effort'; use 'reasoning.effort'."


@pytest.mark.parametrize(
    "param", ["reasoning_effort", "reasoning", "thinking", "thinking_token_budget", "chat_template_kwargs"]
)
def test_legacy_completions_reject_reasoning_parameters(param):
    status, error = refused(check_contract, "completions", {"prompt": "x", param: "high"})
    assert (status, error["code"], error["param"]) == (400, "unsupported_parameter", param)
    assert error["message"] == (
        f"Parameter '{param}' is not supported by /v1/completions. Use /v1/chat/completions or /v1/responses."
    )


def test_missing_output_limit_is_422_with_exact_message():
    status, error = refused(translate, BUDGET, "chat", {"reasoning_effort": "high"})
    assert (status, error["code"], error["param"]) == (
        422,
        "reasoning_budget_requires_max_tokens",
        "max_completion_tokens",
    )
    assert error["message"] == (
        "reasoning_effort 'high' maps to an 8192-token reasoning budget for this model, "
        "but max_completion_tokens is not set. "
        "Set max_completion_tokens above 8192 or select a lower reasoning_effort."
    )


def test_equal_limit_is_400_with_exact_message():
    status, error = refused(
        translate, BUDGET, "chat", {"reasoning_effort": "high", "max_completion_tokens": 8192}
    )
    assert (status, error["code"]) == (400, "reasoning_budget_exceeds_max_tokens")
    assert error["message"] == (
        "reasoning_effort 'high' maps to an 8192-token reasoning budget for this model, "
        "but max_completion_tokens is 8192. "
        "Increase max_completion_tokens above 8192 or select a lower reasoning_effort."
    )


def test_max_completion_tokens_preferred_and_null_falls_back_to_max_tokens():
    body = {"reasoning_effort": "high", "max_completion_tokens": 9000, "max_tokens": 10}
    assert translate(BUDGET, "chat", body)["thinking_token_budget"] == 8192
    _status, error = refused(
        translate,
        BUDGET,
        "chat",
        {"reasoning_effort": "high", "max_completion_tokens": None, "max_tokens": 100},
    )
    assert error["param"] == "max_tokens"


def test_malformed_limit_is_invalid_type_only_with_budget_mappings():
    status, error = refused(
        translate, BUDGET, "chat", {"reasoning_effort": "high", "max_completion_tokens": "lots"}
    )
    assert (status, error["code"]) == (400, "invalid_type")
    assert translate(SGLANG, "chat", {"reasoning_effort": "high", "max_completion_tokens": "lots"})


def test_responses_budget_errors_name_max_output_tokens():
    _status, error = refused(translate, RESPONSES_BUDGET, "responses", {"reasoning": {"effort": "high"}})
    assert error["param"] == "max_output_tokens"


def test_reasoning_budget_is_validated_for_every_pool_provider():
    small = {
        "chat_completions": {
            **BUDGET["chat_completions"],
            "writes": [
                {"target_path": "/reasoning_effort", "values": {"high": "high"}},
                {"target_path": "/thinking_token_budget", "values": {"high": 4096}},
            ],
        }
    }
    pool = providers(small, BUDGET)
    request = check_contract("chat", {"reasoning_effort": "high", "max_completion_tokens": 6000})
    assert request is not None
    _status, error = refused(check_providers, pool, request)
    assert error["code"] == "reasoning_budget_exceeds_max_tokens"


def test_reasoning_effort_must_be_supported_by_every_pool_provider():
    full = {
        "chat_completions": {
            "unsupported_efforts": [],
            "writes": [
                {
                    "target_path": "/reasoning_effort",
                    "values": {e: e for e in ("none", "minimal", "low", "medium", "high", "xhigh", "max")},
                }
            ],
        }
    }
    pool = providers(full, SGLANG)
    request = check_contract("chat", {"reasoning_effort": "max"})
    assert request is not None
    assert refused(check_providers, pool, request)[1]["code"] == "unsupported_value"


def config_error(translation: object) -> str:
    with pytest.raises(ConfigError) as caught:
        providers(translation)  # type: ignore[arg-type]
    return str(caught.value)


def w(path: str, values: dict) -> dict:
    return {"target_path": path, "values": values}


ALL_LOW = {e: 1 for e in ("none", "minimal", "low", "medium", "high", "xhigh", "max")}


@pytest.mark.parametrize(
    ("translation", "fragment"),
    [
        ({}, "at least one API surface must be configured"),
        ({"chat_completions": {"writes": []}}, "writes: must contain at least one write"),
        (
            {"chat_completions": {"writes": [w("/messages", ALL_LOW)]}},
            "must address a reasoning-related request field",
        ),
        ({"chat_completions": {"writes": [w("/chat_template_kwargs/other", ALL_LOW)]}}, "reasoning-related"),
        (
            {"chat_completions": {"writes": [w("/reasoning/" + "/".join("abcdefgh"), ALL_LOW)]}},
            "not exceed 8 path segments",
        ),
        ({"chat_completions": {"writes": [w("/thinking/a b", ALL_LOW)]}}, "may only contain letters"),
        (
            {"chat_completions": {"writes": [w("/thinking", ALL_LOW), w("/reasoning_effort", {"low": 1})]}},
            "exactly the same",
        ),
        (
            {"chat_completions": {"writes": [w("/thinking", ALL_LOW), w("/thinking", ALL_LOW)]}},
            "must be unique",
        ),
        (
            {"chat_completions": {"writes": [w("/thinking", ALL_LOW), w("/thinking/type", ALL_LOW)]}},
            "must not overlap",
        ),
        (
            {"chat_completions": {"writes": [w("/thinking/type", ALL_LOW), w("/thinking", ALL_LOW)]}},
            "must not overlap",
        ),
        (
            {"chat_completions": {"unsupported_efforts": ["low"], "writes": [w("/thinking", ALL_LOW)]}},
            "must not overlap",
        ),
        (
            {"chat_completions": {"writes": [w("/thinking", {"low": 1})]}},
            "account for every OpenAI reasoning effort",
        ),
        (
            {
                "chat_completions": {
                    "writes": [
                        w("/reasoning_effort", ALL_LOW),
                        w("/thinking_token_budget", {**ALL_LOW, "low": 1.5}),
                    ]
                }
            },
            "non-negative integers",
        ),
        (
            {"chat_completions": {"writes": [w("/thinking_token_budget", ALL_LOW)]}},
            "requires a reasoning_effort write",
        ),
        ({"chat_completions": {"writes": [w("/thinking", {**ALL_LOW, "ultra": 1})]}}, "must be one of"),
    ],
)
def test_invalid_translation_configs_are_refused_at_load(translation, fragment):
    message = config_error(translation)
    assert "targets.m.providers[0].reasoning_translation" in message
    assert fragment in message


# --- through the app (lib.rs reasoning tests) --------------------------------------------------


@pytest.fixture
def mock_a(mock_upstream_factory):
    return mock_upstream_factory("a")


@pytest.fixture
def mock_b(mock_upstream_factory):
    return mock_upstream_factory("b")


THINKING_OBJECT = {
    "chat_completions": {
        "unsupported_efforts": ["minimal", "low", "medium", "xhigh", "max"],
        "writes": [
            {
                "target_path": "/thinking",
                "values": {"none": {"type": "disabled"}, "high": {"type": "enabled"}},
            }
        ],
    }
}


def app_config(*providers: dict, strict: bool = False, **pool: Any) -> dict:
    config: dict = {"targets": {"m": {"strategy": "priority", "providers": list(providers), **pool}}}
    if strict:
        config["strict_mode"] = True
    return config


async def post(write_config, config: dict, body: Any, path: str = "/v1/chat/completions", **headers: str):
    from tests.support.app_client import app_client

    async with app_client(write_config(config)) as client:
        if isinstance(body, bytes):
            return await client.post(path, content=body, headers=headers)
        return await client.post(path, json=body, headers=headers)


async def test_provider_reasoning_translation_applies_to_upstream_body(write_config, mock_a):
    config = app_config({"url": mock_a.url, "reasoning_translation": SGLANG})
    r = await post(write_config, config, {"model": "m", "messages": [], "reasoning_effort": "none"})
    assert r.status_code == 200
    sent = mock_a.requests[0].json()
    assert sent["chat_template_kwargs"] == {"thinking": False}
    assert "reasoning_effort" not in sent


async def test_missing_output_limit_returns_422_before_upstream_request(write_config, mock_a):
    config = app_config({"url": mock_a.url, "reasoning_translation": BUDGET})
    r = await post(write_config, config, {"model": "m", "messages": [], "reasoning_effort": "high"})
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "max_completion_tokens"
    assert r.json()["error"]["code"] == "reasoning_budget_requires_max_tokens"
    assert mock_a.request_count == 0


async def test_reasoning_effort_must_be_supported_by_every_pool_provider_before_any_call(
    write_config, mock_a, mock_b
):
    full = {
        "chat_completions": {
            "unsupported_efforts": ["minimal", "xhigh", "max"],
            "writes": [
                {
                    "target_path": "/reasoning_effort",
                    "values": {"none": "none", "low": "low", "medium": "medium", "high": "high"},
                }
            ],
        }
    }
    partial = {
        "chat_completions": {
            "unsupported_efforts": ["minimal", "high", "xhigh", "max"],
            "writes": [
                {
                    "target_path": "/reasoning_effort",
                    "values": {"none": "none", "low": "low", "medium": "medium"},
                }
            ],
        }
    }
    config = app_config(
        {"url": mock_a.url, "reasoning_translation": full},
        {"url": mock_b.url, "reasoning_translation": partial},
    )
    r = await post(write_config, config, {"model": "m", "messages": [], "reasoning_effort": "high"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_value"
    assert mock_a.request_count == mock_b.request_count == 0


async def test_invalid_reasoning_effort_returns_parameter_specific_400(write_config, mock_a):
    r = await post(
        write_config,
        app_config({"url": mock_a.url}),
        {"model": "m", "messages": [], "reasoning_effort": "ultra"},
    )
    assert r.status_code == 400
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("reasoning_effort", "invalid_value")
    assert mock_a.request_count == 0


async def test_provider_specific_reasoning_params_are_refused_without_any_translation(write_config, mock_a):
    body = {"model": "m", "messages": [], "chat_template_kwargs": {"enable_thinking": True}}
    r = await post(write_config, app_config({"url": mock_a.url}), body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_parameter"
    assert mock_a.request_count == 0


async def test_reasoning_path_with_override_and_a_non_json_body_is_400(write_config, mock_a):
    r = await post(write_config, app_config({"url": mock_a.url}), b"not json", **{"model-override": "m"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Request body must be valid JSON."


async def test_non_reasoning_routes_allow_non_json_payloads(write_config, mock_a):
    payload = b"--boundary\r\nContent-Disposition: form-data; name=file\r\n\r\nRIFF....\r\n--boundary--"
    r = await post(
        write_config,
        app_config({"url": mock_a.url}),
        payload,
        "/v1/audio/transcriptions",
        **{"model-override": "m"},
    )
    assert r.status_code == 200
    assert mock_a.requests[0].body == payload


async def test_reasoning_translation_is_rebuilt_for_each_fallback_attempt(write_config, mock_a, mock_b):
    from tests.support.mock_upstream import Canned

    sglang_high = {
        "chat_completions": {
            "unsupported_efforts": ["minimal", "xhigh", "max"],
            "writes": [
                {
                    "target_path": "/chat_template_kwargs/thinking",
                    "values": {"none": False, "low": True, "medium": True, "high": True},
                }
            ],
        }
    }
    thinking = {
        "chat_completions": {
            "unsupported_efforts": ["minimal", "xhigh", "max"],
            "writes": [
                {
                    "target_path": "/thinking",
                    "values": {
                        e: {"type": "disabled" if e == "none" else "enabled"}
                        for e in ("none", "low", "medium", "high")
                    },
                }
            ],
        }
    }
    mock_a.answer_next(Canned(500, b'{"error": "boom"}'))
    config = app_config(
        {"url": mock_a.url + "/v1", "reasoning_translation": sglang_high},
        {"url": mock_b.url + "/v1", "reasoning_translation": thinking},
        strict=True,
        fallback={"enabled": True, "on_status": [5]},
    )
    r = await post(write_config, config, {"model": "m", "messages": [], "reasoning_effort": "none"})
    assert r.status_code == 200
    first, second = mock_a.requests[0].json(), mock_b.requests[0].json()
    assert first["chat_template_kwargs"] == {"thinking": False} and "reasoning_effort" not in first
    assert second["thinking"] == {"type": "disabled"}
    assert "chat_template_kwargs" not in second and "reasoning_effort" not in second
