"""OpenAI Chat request -> Anthropic Messages request, field by field."""

from __future__ import annotations

from typing import Any

import pytest

from onwards.convert import DEFAULT_MAX_TOKENS, ConversionError, chat_to_messages, wants_usage

USER = {"role": "user", "content": "hi"}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def _req(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [USER]}
    body.update(fields)
    return body


FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "json_schema response_format",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            }
        },
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
    ),
    ("default max_tokens", {}, {"max_tokens": DEFAULT_MAX_TOKENS}),
    ("max_tokens", {"max_tokens": 10}, {"max_tokens": 10}),
    ("max_completion_tokens wins", {"max_tokens": 10, "max_completion_tokens": 20}, {"max_tokens": 20}),
    ("temperature", {"temperature": 0.5}, {"temperature": 0.5}),
    ("top_p", {"top_p": 0.3}, {"top_p": 0.3}),
    ("stop string", {"stop": "END"}, {"stop_sequences": ["END"]}),
    ("stop list", {"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
    ("user", {"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
    ("stream", {"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
    (
        "tools",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "description": "d",
                        "parameters": {"type": "object"},
                        "strict": True,
                    },
                }
            ]
        },
        {"tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]},
    ),
    (
        "tool without parameters",
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]},
    ),
    ("tool_choice auto", {"tools": TOOLS, "tool_choice": "auto"}, {"tool_choice": {"type": "auto"}}),
    ("tool_choice required", {"tools": TOOLS, "tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
    ("tool_choice none", {"tools": TOOLS, "tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
    (
        "tool_choice function",
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "f"}}},
        {"tool_choice": {"type": "tool", "name": "f"}},
    ),
    (
        "parallel_tool_calls false",
        {"tools": TOOLS, "parallel_tool_calls": False},
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
    ),
    (
        "parallel false with required",
        {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
        {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
    ),
    (
        "reasoning_effort low",
        {"reasoning_effort": "low"},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    ),
    (
        "reasoning_effort max",
        {"reasoning_effort": "max", "max_tokens": 100000},
        {"thinking": {"type": "enabled", "budget_tokens": 65536}},
    ),
    (
        "reasoning_effort high shrinks to fit",
        {"reasoning_effort": "high", "max_tokens": 5000},
        {"thinking": {"type": "enabled", "budget_tokens": 4999}},
    ),
]


@pytest.mark.parametrize(("name", "fields", "expected"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_fields(name: str, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out = chat_to_messages(_req(**fields))
    for key, value in expected.items():
        assert out[key] == value, key


@pytest.mark.parametrize(
    "fields",
    [
        {"reasoning_effort": "low", "max_tokens": 1000},
        {"reasoning_effort": "minimal"},
        {"reasoning_effort": "none"},
    ],
    ids=["budget does not fit", "minimal", "none"],
)
def test_no_thinking(fields: dict[str, Any]) -> None:
    assert "thinking" not in chat_to_messages(_req(**fields))


def test_dropped_fields_do_not_reach_anthropic() -> None:
    out = chat_to_messages(
        _req(
            frequency_penalty=1,
            presence_penalty=1,
            seed=3,
            logit_bias={"1": 2},
            n=1,
            response_format={"type": "text"},
            store=True,
            tool_choice="auto",
        )
    )
    assert set(out) == {"model", "messages", "max_tokens"}


MESSAGE_CASES: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
    ("user string", [USER], {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
    (
        "system and developer gathered",
        [
            {"role": "system", "content": "a"},
            USER,
            {"role": "developer", "content": [{"type": "text", "text": "b"}]},
        ],
        {
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        },
    ),
    ("one system is a string", [{"role": "system", "content": "a"}, USER], {"system": "a"}),
    (
        "user parts with images",
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x/i.png"}},
                ],
            }
        ],
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}},
                    ],
                }
            ]
        },
    ),
    (
        "tool round trip merges turns",
        [
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"q":1}'}},
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "and?"},
        ],
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "c1", "name": "f", "input": {"q": 1}},
                        {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                        {"type": "tool_result", "tool_use_id": "c2", "content": "two"},
                        {"type": "text", "text": "and?"},
                    ],
                },
            ]
        },
    ),
    (
        "assistant text and reasoning dropped",
        [USER, {"role": "assistant", "content": "yes", "reasoning_content": "why"}],
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "yes"}]},
            ]
        },
    ),
    (
        "empty assistant skipped",
        [USER, {"role": "assistant", "content": ""}, USER],
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "hi"}]}
            ]
        },
    ),
]


@pytest.mark.parametrize(("name", "messages", "expected"), MESSAGE_CASES, ids=[c[0] for c in MESSAGE_CASES])
def test_messages(name: str, messages: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    out = chat_to_messages(_req(messages=messages))
    for key, value in expected.items():
        assert out[key] == value, key


REJECTED: list[tuple[str, dict[str, Any], str]] = [
    (
        "json_schema without schema",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        "response_format.json_schema.schema",
    ),
    ("n", {"n": 2}, "n"),
    ("logprobs", {"logprobs": True}, "logprobs"),
    ("json mode", {"response_format": {"type": "json_object"}}, "response_format"),
    ("audio", {"audio": {"voice": "x"}}, "audio"),
    ("modalities", {"modalities": ["text", "audio"]}, "modalities"),
    ("functions", {"functions": [{"name": "f"}]}, "functions"),
    ("non-function tool", {"tools": [{"type": "custom", "custom": {}}]}, "tools.0.type"),
    (
        "input_audio part",
        {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        "messages.0.content.0.type",
    ),
    (
        "file part",
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
        "messages.0.content.0.type",
    ),
    (
        "data url not base64",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}],
                }
            ]
        },
        "messages.0.content.0.image_url.url",
    ),
    (
        "arguments not an object",
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                }
            ]
        },
        "messages.0.tool_calls.0.function.arguments",
    ),
    (
        "arguments not json",
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ]
        },
        "messages.0.tool_calls.0.function.arguments",
    ),
    ("function role", {"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages.0.role"),
    ("tool without id", {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
    ("unknown reasoning_effort", {"reasoning_effort": "extreme"}, "reasoning_effort"),
    ("bad tool_choice", {"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ("max_tokens string", {"max_tokens": "10"}, "max_tokens"),
    ("missing messages", {"messages": None}, "messages"),
]


@pytest.mark.parametrize(("name", "fields", "param"), REJECTED, ids=[c[0] for c in REJECTED])
def test_unsupported_or_malformed_input_is_a_conversion_error(
    name: str, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(ConversionError) as caught:
        chat_to_messages(_req(**fields))
    assert caught.value.status == 400
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"stream_options": {"include_usage": True}}, True),
        ({"stream_options": {"include_usage": False}}, False),
        ({}, False),
        ({"stream_options": "yes"}, False),
    ],
)
def test_wants_usage(options: dict[str, Any], expected: bool) -> None:
    assert wants_usage(_req(**options)) is expected


def test_tool_ids_anthropic_would_refuse_are_rewritten_alike_in_call_and_result() -> None:
    messages = [
        USER,
        {
            "role": "assistant",
            "tool_calls": [{"id": "functions.f:0", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "functions.f:0", "content": "ok"},
    ]
    out = chat_to_messages(_req(messages=messages))["messages"]
    assert out[1]["content"][0]["id"] == "functions_f_0"
    assert out[2]["content"][0]["tool_use_id"] == "functions_f_0"
