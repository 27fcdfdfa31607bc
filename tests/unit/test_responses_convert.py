"""Responses <-> Chat Completions conversion, as tables: request in, chat body out; chat
completion in, output items out. Shapes are checked against the official SDK's models."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response

from onwards.responses import convert
from onwards.responses.errors import ResponsesRequestError

IMG = "data:image/png;base64,iVBORw0KGgo="

REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "string input",
        {"model": "m", "input": "hi"},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "instructions become the first system message",
        {"model": "m", "instructions": "be brief", "input": "hi"},
        {
            "model": "m",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        },
    ),
    (
        "typeless and typed message items, developer becomes system, text parts joined",
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "rules"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "rules"},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
        },
    ),
    (
        "images and files stay parts of a user message",
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this"},
                        {"type": "input_image", "image_url": IMG, "detail": "low"},
                        {
                            "type": "input_file",
                            "file_data": "data:application/pdf;base64,AA",
                            "filename": "a.pdf",
                        },
                    ],
                }
            ],
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": IMG, "detail": "low"}},
                        {
                            "type": "file",
                            "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"},
                        },
                    ],
                }
            ],
        },
    ),
    (
        "function calls join the assistant turn; outputs become tool messages; reasoning items left out",
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "checking"}],
                },
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"city":"x"}'},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"city":"y"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "checking",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"x"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"y"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "c2", "content": "rain"},
            ],
        },
    ),
    (
        "tools, tool_choice, text.format json_schema, reasoning effort, limits and sampling",
        {
            "model": "m",
            "input": "x",
            "tools": [
                {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}
            ],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {
                "format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}
            },
            "reasoning": {"effort": "high", "summary": "auto"},
            "max_output_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "parallel_tool_calls": False,
            "user": "u1",
            "store": False,
            "metadata": {"a": "b"},
        },
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
            },
            "reasoning_effort": "high",
            "max_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "parallel_tool_calls": False,
            "user": "u1",
        },
    ),
    (
        "json_object and plain text formats; streaming asks for usage",
        {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}, "stream": True},
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
]


@pytest.mark.parametrize(("name", "request_body", "chat"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_to_chat(name: str, request_body: dict[str, Any], chat: dict[str, Any]) -> None:
    assert convert.to_chat_request(request_body) == chat


def test_history_sits_between_instructions_and_new_input() -> None:
    history = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]
    server = [{"type": "function", "function": {"name": "srv"}}]
    chat = convert.to_chat_request(
        {
            "model": "m",
            "instructions": "sys",
            "input": "3",
            "tools": [{"type": "hosted_tool", "name": "srv"}],
        },
        history,
        server,
    )
    assert [m["content"] for m in chat["messages"]] == ["sys", "1", "2", "3"]
    assert chat["tools"] == server


BAD_REQUESTS = [
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 3}, "input"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, None),
    (
        {
            "model": "m",
            "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": IMG}]}],
        },
        None,
    ),
    (
        {"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
        "input[0].call_id",
    ),
    ({"model": "m", "input": "x", "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
]


@pytest.mark.parametrize(("request_body", "param"), BAD_REQUESTS)
def test_unmappable_requests_are_refused_with_the_param(
    request_body: dict[str, Any], param: str | None
) -> None:
    with pytest.raises(ResponsesRequestError) as caught:
        convert.to_chat_request(request_body)
    if param is not None:
        assert caught.value.param == param
    assert caught.value.status == 400
    assert b'"invalid_request_error"' in caught.value.body()


def _completion(message: dict[str, Any], finish: str = "stop", usage: Any = None) -> dict[str, Any]:
    return {"id": "c", "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}


COMPLETIONS: list[tuple[str, dict[str, Any], list[tuple[str, Any]]]] = [
    ("text", _completion({"role": "assistant", "content": "hi"}), [("message", "hi")]),
    (
        "reasoning_content first, then text",
        _completion({"role": "assistant", "content": "4", "reasoning_content": "2+2"}),
        [("reasoning", "2+2"), ("message", "4")],
    ),
    (
        "reasoning field (OpenRouter style)",
        _completion({"role": "assistant", "content": "ok", "reasoning": "think"}),
        [("reasoning", "think"), ("message", "ok")],
    ),
    (
        "tool calls become function_call items; hidden server tools are left out",
        _completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "client", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "srv", "arguments": "{}"}},
                ],
            },
            "tool_calls",
        ),
        [("function_call", "client")],
    ),
    ("empty content gives no message item", _completion({"role": "assistant", "content": ""}), []),
    ("refusal", _completion({"role": "assistant", "content": None, "refusal": "no"}), [("message", "no")]),
]


def _summary(item: dict[str, Any]) -> tuple[str, Any]:
    if item["type"] == "message":
        part = item["content"][0]
        return ("message", part.get("text", part.get("refusal")))
    if item["type"] == "reasoning":
        return ("reasoning", item["content"][0]["text"])
    return ("function_call", item["name"])


@pytest.mark.parametrize(("name", "completion", "expected"), COMPLETIONS, ids=[c[0] for c in COMPLETIONS])
def test_completion_to_items(name: str, completion: dict[str, Any], expected: list[tuple[str, Any]]) -> None:
    items = convert.completion_to_items(completion, hidden_tools={"srv"})
    assert [_summary(i) for i in items] == expected
    response = convert.build_response({"model": "m", "input": "x"}, "resp_1", output=items)
    Response.model_validate(response)  # the SDK's own model accepts it


def test_length_makes_items_and_response_incomplete() -> None:
    items = convert.completion_to_items(_completion({"role": "assistant", "content": "cut"}, "length"))
    assert items[0]["status"] == "incomplete"
    assert convert.response_status("length") == ("incomplete", {"reason": "max_output_tokens"})
    assert convert.response_status("content_filter") == ("incomplete", {"reason": "content_filter"})
    assert convert.response_status("stop") == ("completed", None)


USAGES = [
    (None, None),
    (
        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 15,
        },
    ),
    (
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
        {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 3},
            "total_tokens": 15,
        },
    ),
]


@pytest.mark.parametrize(("chat", "responses"), USAGES)
def test_usage(chat: Any, responses: Any) -> None:
    assert convert.chat_usage_to_response(chat) == responses
    Response.model_validate(convert.build_response({"model": "m"}, "resp_1", usage=responses))


def test_usage_sums_across_steps() -> None:
    one = convert.chat_usage_to_response(
        {"prompt_tokens": 1, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1}}
    )
    two = convert.chat_usage_to_response(
        {"prompt_tokens": 10, "completion_tokens": 20, "completion_tokens_details": {"reasoning_tokens": 5}}
    )
    total = convert.add_usage(convert.add_usage(None, one), two)
    assert total == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
        "output_tokens": 22,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 33,
    }
    assert convert.add_usage(total, None) == total


def test_response_echoes_request_settings() -> None:
    request = {
        "model": "m",
        "input": "x",
        "instructions": "i",
        "temperature": 0.5,
        "previous_response_id": "resp_0",
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "metadata": {"k": "v"},
    }
    response = convert.build_response(request, "resp_1", usage=None)
    parsed = Response.model_validate(response)
    assert parsed.id == "resp_1"
    assert parsed.instructions == "i"
    assert parsed.temperature == 0.5
    assert parsed.previous_response_id == "resp_0"
    assert parsed.metadata == {"k": "v"}
    assert parsed.status == "completed"
