"""Whole responses both ways, each result also validated by the official SDK's response model."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from onwards.convert import UpstreamFormatError, chat_completion_to_message, message_to_chat_completion


def _completion(message: dict[str, Any], finish: str | None = "stop", **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    choice.update(extra.pop("choice", {}))
    body = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "up-model",
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }
    body.update(extra)
    return body


TO_MESSAGE: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "text",
        _completion({"content": "hello"}),
        {"content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": None},
    ),
    (
        "id and model",
        _completion({"content": "x"}),
        {"id": "msg_abc", "model": "up-model", "role": "assistant"},
    ),
    ("length", _completion({"content": "x"}, "length"), {"stop_reason": "max_tokens"}),
    ("content_filter", _completion({"content": "x"}, "content_filter"), {"stop_reason": "refusal"}),
    ("null finish", _completion({"content": "x"}, None), {"stop_reason": "end_turn"}),
    (
        "matched stop (vLLM)",
        _completion({"content": "x"}, choice={"stop_reason": "END"}),
        {"stop_reason": "stop_sequence", "stop_sequence": "END"},
    ),
    (
        "tool calls",
        _completion(
            {
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
                ],
            },
            "tool_calls",
        ),
        {
            "stop_reason": "tool_use",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
            ],
        },
    ),
    (
        "reasoning_content",
        _completion({"content": "42", "reasoning_content": "think"}),
        {
            "content": [
                {"type": "thinking", "thinking": "think", "signature": ""},
                {"type": "text", "text": "42"},
            ]
        },
    ),
    (
        "reasoning field",
        _completion({"content": "42", "reasoning": "think"}),
        {
            "content": [
                {"type": "thinking", "thinking": "think", "signature": ""},
                {"type": "text", "text": "42"},
            ]
        },
    ),
    (
        "refusal",
        _completion({"content": None, "refusal": "no"}),
        {"content": [{"type": "text", "text": "no"}]},
    ),
    ("empty", _completion({"content": ""}), {"content": []}),
    (
        "usage",
        _completion({"content": "x"}),
        {
            "usage": {
                "input_tokens": 10,
                "output_tokens": 3,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            }
        },
    ),
    (
        "cached usage",
        _completion(
            {"content": "x"},
            usage={
                "prompt_tokens": 10,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
        ),
        {
            "usage": {
                "input_tokens": 6,
                "output_tokens": 3,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 4,
            }
        },
    ),
    (
        "missing usage and model",
        _completion({"content": "x"}, usage=None, model=None),
        {"usage": {"input_tokens": 0, "output_tokens": 0}, "model": "asked"},
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), TO_MESSAGE, ids=[c[0] for c in TO_MESSAGE])
def test_chat_completion_to_message(name: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    out = chat_completion_to_message(body, "asked")
    for key, value in expected.items():
        assert out[key] == value, key
    Message.model_validate(out)


@pytest.mark.parametrize(
    "body",
    [
        {"object": "list"},
        {"choices": []},
        {"choices": [{"message": "x"}]},
        _completion({"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{bad"}}]}),
        _completion({"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}),
        _completion({"tool_calls": ["x"]}),
    ],
    ids=[
        "not a completion",
        "no choices",
        "no message",
        "bad arguments",
        "arguments not an object",
        "bad call",
    ],
)
def test_unreadable_chat_completion(body: Any) -> None:
    with pytest.raises(UpstreamFormatError):
        chat_completion_to_message(body, "m")


def _message(content: list[dict[str, Any]], stop: str = "end_turn", **extra: Any) -> dict[str, Any]:
    body = {
        "id": "msg_xyz",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 2},
    }
    body.update(extra)
    return body


TO_COMPLETION: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "text",
        _message([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
        {"role": "assistant", "content": "ab"},
        "stop",
    ),
    ("stop_sequence", _message([{"type": "text", "text": "a"}], "stop_sequence"), {"content": "a"}, "stop"),
    ("max_tokens", _message([{"type": "text", "text": "a"}], "max_tokens"), {"content": "a"}, "length"),
    ("context window", _message([], "model_context_window_exceeded"), {"content": ""}, "length"),
    ("refusal", _message([], "refusal"), {"content": ""}, "content_filter"),
    ("pause_turn", _message([], "pause_turn"), {"content": ""}, "stop"),
    (
        "tool_use",
        _message(
            [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": [1]}},
            ],
            "tool_use",
        ),
        {
            "content": "calling",
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"x":[1]}'}}
            ],
        },
        "tool_calls",
    ),
    (
        "only tool_use",
        _message([{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}], "tool_use"),
        {"content": None},
        "tool_calls",
    ),
    (
        "thinking",
        _message(
            [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "zz"},
                {"type": "text", "text": "a"},
            ]
        ),
        {"content": "a", "reasoning_content": "hm"},
        "stop",
    ),
    (
        "server tool blocks left out",
        _message(
            [
                {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
                {"type": "text", "text": "a"},
            ]
        ),
        {"content": "a"},
        "stop",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "message", "finish"), TO_COMPLETION, ids=[c[0] for c in TO_COMPLETION]
)
def test_message_to_chat_completion(
    name: str, body: dict[str, Any], message: dict[str, Any], finish: str
) -> None:
    out = message_to_chat_completion(body, "asked")
    assert out["id"] == "chatcmpl-xyz" and out["model"] == "claude-x" and out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["finish_reason"] == finish
    for key, value in message.items():
        assert choice["message"][key] == value, key
    ChatCompletion.model_validate(out)


def test_anthropic_usage_with_cache_as_openai_usage() -> None:
    body = _message(
        [],
        usage={
            "input_tokens": 5,
            "output_tokens": 2,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
    )
    assert message_to_chat_completion(body, "m")["usage"] == {
        "prompt_tokens": 125,
        "completion_tokens": 2,
        "total_tokens": 127,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


@pytest.mark.parametrize("body", [{"type": "message"}, [], {"content": "text"}])
def test_unreadable_message(body: Any) -> None:
    with pytest.raises(UpstreamFormatError):
        message_to_chat_completion(body, "m")
