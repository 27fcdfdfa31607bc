"""Error bodies from one protocol's shape to the other's, and count_tokens estimates."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from onwards import errors as gateway_errors
from onwards.convert import (
    ConversionError,
    anthropic_error,
    anthropic_error_type,
    estimate_input_tokens,
    to_anthropic_error,
    to_openai_error,
)
from onwards.convert.count_tokens import IMAGE_TOKENS


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (422, "invalid_request_error"),
    ],
)
def test_anthropic_type_by_status(status: int, type_: str) -> None:
    assert anthropic_error_type(status) == type_
    assert orjson.loads(anthropic_error(status, "m")) == {
        "type": "error",
        "error": {"type": type_, "message": "m"},
    }


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            429,
            gateway_errors.RATE_LIMITED["key"],
            orjson.loads(gateway_errors.RATE_LIMITED["key"])["error"]["message"],
        ),
        (401, gateway_errors.INVALID_KEY, "Invalid API key."),
        (502, b"<html>bad gateway</html>", "<html>bad gateway</html>"),
        (500, b"", "The upstream provider returned an error without a message."),
        (400, b'{"error": "plain string"}', "plain string"),
        (400, b'{"message": "top level"}', "top level"),
    ],
)
def test_openai_error_as_anthropic(status: int, body: bytes, message: str) -> None:
    out = orjson.loads(to_anthropic_error(status, body))
    assert out == {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


@pytest.mark.parametrize(
    ("status", "a_type", "o_type"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "invalid_request_error"),
        (429, "rate_limit_error", "rate_limit_error"),
        (529, "overloaded_error", "server_error"),
        (500, "api_error", "server_error"),
    ],
)
def test_anthropic_error_as_openai(status: int, a_type: str, o_type: str) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": a_type, "message": "why"}})
    assert orjson.loads(to_openai_error(status, body)) == {
        "error": {"message": "why", "type": o_type, "param": None, "code": a_type}
    }


def test_unshaped_error_as_openai_uses_the_status() -> None:
    assert orjson.loads(to_openai_error(404, b"nope"))["error"] == {
        "message": "nope",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found_error",
    }


def _count(**fields: Any) -> int:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}]}
    body.update(fields)
    return estimate_input_tokens(body)


def test_count_tokens_text() -> None:
    assert _count() == 4 + 10


@pytest.mark.parametrize(
    ("fields", "extra"),
    [
        ({"system": "y" * 40}, 10),
        ({"system": [{"type": "text", "text": "y" * 40}]}, 10),
        ({"tools": [{"name": "f", "input_schema": {}}]}, 8 + 8),  # 30 chars of JSON: 70 chars, 18 tokens
    ],
    ids=["system string", "system blocks", "tools"],
)
def test_count_tokens_grows_with_each_part(fields: dict[str, Any], extra: int) -> None:
    assert _count(**fields) == _count() + extra


def test_count_tokens_images_are_flat_and_data_is_not_text() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100_000}}
    messages = [{"role": "user", "content": [image, {"type": "text", "text": "x" * 40}]}]
    assert _count(messages=messages) == 4 + IMAGE_TOKENS + 10


def test_count_tokens_tool_blocks() -> None:
    messages = [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "ff", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "z" * 6}]},
    ]
    assert _count(messages=messages) == 8 + 4  # ("ff" + '{"a":1}' + "zzzzzz" = 15 chars) / 4, rounded up


@pytest.mark.parametrize("messages", [None, "x", [1]])
def test_count_tokens_rejects_malformed_messages(messages: Any) -> None:
    with pytest.raises(ConversionError):
        _count(messages=messages)
