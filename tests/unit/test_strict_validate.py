"""Strict request validation: 400 for malformed JSON, 422 for a schema mismatch (missing model
included), the field path in the message; valid bodies come back decoded (the original bytes are
what the gateway forwards). After the Rust onwards' strict/schemas and strict handler tests."""

from __future__ import annotations

import orjson
import pytest

from onwards.errors import GatewayError
from onwards.strict.validate import validate_request


def refused(surface: str, body: bytes) -> tuple[int, dict]:
    with pytest.raises(GatewayError) as caught:
        validate_request(surface, body)  # type: ignore[arg-type]
    return caught.value.status, orjson.loads(caught.value.body)["error"]


def test_simple_chat_request_is_accepted_and_unknown_fields_are_allowed():
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}], "provider_extension": 1}
    assert validate_request("chat", orjson.dumps(body)) == body


def test_multimodal_content_and_tools_are_accepted():
    body = {
        "model": "gpt-4-vision",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/image.jpg"}},
                    {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "auto",
        "stop": ["a", "b"],
        "temperature": 1,
        "seed": -5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert validate_request("chat", orjson.dumps(body))["model"] == "gpt-4-vision"


def test_malformed_json_is_400_with_the_strict_envelope():
    status, error = refused("chat", b'{"model": ')
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None and error["code"] is None
    assert error["message"].startswith("Invalid request: malformed JSON at line 1 column")


def test_empty_body_is_400():
    assert refused("chat", b"")[0] == 400


def test_missing_model_is_422_naming_the_field():
    status, error = refused("chat", b'{"messages": []}')
    assert status == 422
    assert error["message"] == "Invalid request: model: required"


def test_completions_missing_model_is_422():
    assert refused("completions", b'{"prompt": "hi"}')[0] == 422


def test_completions_missing_prompt_is_accepted_and_array_prompts_too():
    assert validate_request("completions", b'{"model": "m"}') == {"model": "m"}
    assert validate_request("completions", b'{"model": "m", "prompt": [[1, 2], [3]]}')["prompt"] == [
        [1, 2],
        [3],
    ]


def test_completions_rejects_mixed_or_float_token_arrays():
    assert refused("completions", b'{"model": "m", "prompt": [1, "a"]}')[0] == 422
    assert refused("completions", b'{"model": "m", "prompt": [1.5]}')[0] == 422


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "Invalid request: expected a chat completion request object, got a list"),
        (b'{"model": 5, "messages": []}', "Invalid request: model: expected a string, got an integer"),
        (b'{"model": "m", "messages": [{}]}', "Invalid request: messages[0].role: required"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": 5}]}',
            "Invalid request: messages[0].content: expected a string or a list of content parts, "
            "got an integer",
        ),
        (
            b'{"model": "m", "messages": [], "max_tokens": 1.0}',
            "Invalid request: max_tokens: expected a non-negative integer, got a number",
        ),
        (
            b'{"model": "m", "messages": [], "max_tokens": -1}',
            "Invalid request: max_tokens: expected an integer from 0 to 4294967295",
        ),
        (
            b'{"model": "m", "messages": [], "stream": "yes"}',
            "Invalid request: stream: expected true or false, got a string",
        ),
        (b'{"model": null, "messages": []}', "Invalid request: model: expected a string, got null"),
    ],
)
def test_chat_schema_mismatch_is_422_with_the_field_path(body, message):
    status, error = refused("chat", body)
    assert status == 422
    assert error["message"] == message


def test_optional_fields_may_be_null():
    assert validate_request("chat", b'{"model": "m", "messages": [], "temperature": null}')


def test_embeddings_inputs():
    for value in ('"hi"', '["a", "b"]', "[[1, 2]]", "[1, 2]"):
        assert validate_request("embeddings", f'{{"model": "e", "input": {value}}}'.encode())
    assert refused("embeddings", b'{"model": "e"}') == (
        422,
        {
            "message": "Invalid request: input: required",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        },
    )


def test_responses_requires_input_and_flat_function_tools():
    assert validate_request("responses", b'{"model": "m", "input": "hi"}')
    assert validate_request("responses", b'{"model": "m", "input": [{"type": "web_search", "x": 1}]}')
    assert refused("responses", b'{"model": "m"}')[0] == 422
    nested = {
        "model": "m",
        "input": "hi",
        "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}],
    }
    status, error = refused("responses", orjson.dumps(nested))
    assert status == 422
    assert error["message"] == "Invalid request: tools[0].name: required"
    flat = {
        "model": "m",
        "input": "hi",
        "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {}}],
    }
    assert validate_request("responses", orjson.dumps(flat))


def test_responses_keeps_other_tool_types():
    body = {
        "model": "m",
        "input": "hi",
        "tools": [{"type": "web_search"}, {"type": "mcp", "server_label": "s"}],
    }
    assert validate_request("responses", orjson.dumps(body))
