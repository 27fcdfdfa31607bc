"""Anthropic Messages request -> OpenAI Chat request, field by field."""

from __future__ import annotations

from typing import Any

import pytest

from onwards.convert import ConversionError, messages_to_chat

USER = {"role": "user", "content": "hi"}
PDF = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}


def _req(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "max_tokens": 64, "messages": [USER]}
    body.update(fields)
    return body


FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "output_config.format",
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": {"type": "object"}},
            }
        },
    ),
    ("max_tokens", {}, {"model": "m", "max_tokens": 64}),
    ("temperature", {"temperature": 0.2}, {"temperature": 0.2}),
    ("top_p", {"top_p": 0.9}, {"top_p": 0.9}),
    ("stop_sequences", {"stop_sequences": ["END", "##"]}, {"stop": ["END", "##"]}),
    ("metadata.user_id", {"metadata": {"user_id": "u-1"}}, {"user": "u-1"}),
    ("stream", {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
    (
        "tool_choice auto",
        {"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "auto"}},
        {"tool_choice": "auto"},
    ),
    (
        "tool_choice any",
        {"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "any"}},
        {"tool_choice": "required"},
    ),
    (
        "tool_choice none",
        {"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "none"}},
        {"tool_choice": "none"},
    ),
    (
        "tool_choice tool",
        {"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "f"}},
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
    ),
    (
        "disable_parallel_tool_use",
        {
            "tools": [{"name": "f", "input_schema": {}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        },
        {"tool_choice": "auto", "parallel_tool_calls": False},
    ),
    (
        "tools",
        {
            "tools": [
                {"name": "f", "description": "d", "input_schema": {"type": "object"}, "cache_control": {}}
            ]
        },
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
                }
            ]
        },
    ),
    (
        "custom tool type",
        {"tools": [{"type": "custom", "name": "f", "input_schema": {"type": "object"}}]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    ),
]


@pytest.mark.parametrize(("name", "fields", "expected"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_fields(name: str, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out = messages_to_chat(_req(**fields))
    for key, value in expected.items():
        assert out[key] == value, key


def test_dropped_fields_do_not_reach_openai() -> None:
    out = messages_to_chat(
        _req(
            top_k=5,
            service_tier="auto",
            metadata={"other": 1},
            thinking={"type": "enabled", "budget_tokens": 2048},
            output_config={"effort": "high"},
            inference_geo="us",
        )
    )
    assert set(out) == {"model", "messages", "max_tokens"}


SYSTEM_CASES = [
    ("string", "be brief", [{"role": "system", "content": "be brief"}]),
    (
        "blocks",
        [
            {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "b"},
        ],
        [{"role": "system", "content": "a\n\nb"}],
    ),
    ("empty", "", []),
]


@pytest.mark.parametrize(("name", "system", "expected"), SYSTEM_CASES, ids=[c[0] for c in SYSTEM_CASES])
def test_system(name: str, system: Any, expected: list[dict[str, Any]]) -> None:
    assert messages_to_chat(_req(system=system))["messages"][:-1] == expected


CONTENT_CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    (
        "text documents become text",
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "title": "notes.txt",
                    "source": {"type": "text", "media_type": "text/plain", "data": "abc"},
                },
                {
                    "type": "document",
                    "source": {"type": "content", "content": [{"type": "text", "text": "def"}]},
                },
            ],
        },
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "notes.txt\n\nabc"}, {"type": "text", "text": "def"}],
            }
        ],
    ),
    (
        "text document in a tool result",
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "abc"},
                        }
                    ],
                }
            ],
        },
        [{"role": "tool", "tool_call_id": "t1", "content": "abc"}],
    ),
    ("user string", USER, [{"role": "user", "content": "hi"}]),
    (
        "one text block",
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        [{"role": "user", "content": "hi"}],
    ),
    (
        "text and base64 image",
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ],
        },
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    ),
    (
        "url image",
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}]},
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/i.png"}}]}],
    ),
    (
        "tool results before the user text",
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "next"},
                {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
        },
        [
            {"role": "tool", "tool_call_id": "t1", "content": "42"},
            {"role": "tool", "tool_call_id": "t2", "content": "a\n\nb"},
            {"role": "user", "content": "next"},
        ],
    ),
    (
        "tool result error and empty",
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True},
                {"type": "tool_result", "tool_use_id": "t2"},
            ],
        },
        [
            {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
            {"role": "tool", "tool_call_id": "t2", "content": ""},
        ],
    ),
    (
        "tool result image follows as user content",
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "shot"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/jpeg", "data": "Zm9v"},
                        },
                    ],
                }
            ],
        },
        [
            {"role": "tool", "tool_call_id": "t1", "content": "shot"},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,Zm9v"}}],
            },
        ],
    ),
    ("assistant string", {"role": "assistant", "content": "ok"}, [{"role": "assistant", "content": "ok"}]),
    (
        "assistant text, thinking and tool_use",
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "redacted_thinking", "data": "xx"},
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "x"}},
            ],
        },
        [
            {
                "role": "assistant",
                "content": "calling",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"q":"x"}'}}
                ],
            }
        ],
    ),
    (
        "assistant only tool_use",
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            }
        ],
    ),
]


@pytest.mark.parametrize(("name", "message", "expected"), CONTENT_CASES, ids=[c[0] for c in CONTENT_CASES])
def test_content(name: str, message: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert messages_to_chat(_req(messages=[message]))["messages"] == expected


REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("output format type", {"output_config": {"format": {"type": "regex"}}}, "output_config.format.type"),
    (
        "pdf document",
        {"messages": [{"role": "user", "content": [PDF]}]},
        "messages.0.content.0.source.type",
    ),
    (
        "search_result block",
        {
            "messages": [
                {"role": "user", "content": [{"type": "search_result", "source": "x", "content": []}]}
            ]
        },
        "messages.0.content.0.type",
    ),
    (
        "file image source",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
            ]
        },
        "messages.0.content.0.source.type",
    ),
    ("server tool", {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ("mcp servers", {"mcp_servers": [{"url": "x"}]}, "mcp_servers"),
    ("bad role", {"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ("missing max_tokens", {"max_tokens": None}, "max_tokens"),
    ("bool max_tokens", {"max_tokens": True}, "max_tokens"),
    ("missing model", {"model": None}, "model"),
    ("messages not a list", {"messages": "hi"}, "messages"),
    (
        "tool_result with document",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": [PDF]}],
                }
            ]
        },
        "messages.0.content.0.content.0.source.type",
    ),
    ("system with image", {"system": [{"type": "image"}]}, "system.0.type"),
    ("unknown tool_choice", {"tool_choice": {"type": "maybe"}}, "tool_choice.type"),
    (
        "assistant server_tool_use",
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "server_tool_use", "id": "s", "name": "web_search"}],
                }
            ]
        },
        "messages.0.content.0.type",
    ),
]


@pytest.mark.parametrize(("name", "fields", "param"), REJECTED, ids=[c[0] for c in REJECTED])
def test_unsupported_or_malformed_input_is_a_conversion_error(
    name: str, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(ConversionError) as caught:
        messages_to_chat(_req(**fields))
    assert caught.value.status == 400
    assert caught.value.param == param
    assert param.split(".")[0] in caught.value.message
