"""The adapter chosen per provider format and client protocol, and what each adapter does end to end."""

from __future__ import annotations

import orjson
import pytest

from onwards.convert import UpstreamFormatError
from onwards.convert.adapters import (
    CHAT_OVER_MESSAGES,
    CLIENT_ANTHROPIC,
    CLIENT_COUNT_TOKENS,
    CLIENT_OPENAI,
    MESSAGES_OVER_CHAT,
    adapters_for,
    client_protocol,
)


def test_each_format_converts_only_the_other_protocol() -> None:
    assert adapters_for("openai") == {CLIENT_ANTHROPIC: MESSAGES_OVER_CHAT}
    assert adapters_for("anthropic") == {CLIENT_OPENAI: CHAT_OVER_MESSAGES}


@pytest.mark.parametrize(
    ("method", "path", "protocol"),
    [
        ("POST", "/v1/messages", CLIENT_ANTHROPIC),
        ("POST", "/v1/messages/count_tokens", CLIENT_COUNT_TOKENS),
        ("POST", "/v1/chat/completions", CLIENT_OPENAI),
        ("POST", "/chat/completions", CLIENT_OPENAI),
        ("GET", "/v1/messages", None),
        ("POST", "/v1/embeddings", None),
        ("POST", "/v1/messages/batches", None),
    ],
)
def test_client_protocol(method: str, path: str, protocol: str | None) -> None:
    assert client_protocol(method, path) == protocol


def test_upstream_paths() -> None:
    assert MESSAGES_OVER_CHAT.upstream_path == "/v1/chat/completions"
    assert CHAT_OVER_MESSAGES.upstream_path == "/v1/messages"


def test_reply_keeps_or_forces_the_model() -> None:
    raw = orjson.dumps(
        {"id": "c", "model": "up", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    )
    assert orjson.loads(MESSAGES_OVER_CHAT.reply(raw, "alias", False))["model"] == "up"
    assert orjson.loads(MESSAGES_OVER_CHAT.reply(raw, "alias", True))["model"] == "alias"


def test_reply_that_is_not_json_is_an_upstream_format_error() -> None:
    with pytest.raises(UpstreamFormatError):
        CHAT_OVER_MESSAGES.reply(b"<html>", "m", False)


def test_stream_translators_follow_the_client_body() -> None:
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "up", "content": [], "usage": {}}}
    raw = b"data: " + orjson.dumps(start) + b"\n\n"
    raw += (
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}\n\n'
    )
    raw += b'data: {"type":"message_stop"}\n\n'
    with_usage = CHAT_OVER_MESSAGES.stream("alias", {"stream_options": {"include_usage": True}}, True)
    out = with_usage.feed(raw) + with_usage.close()
    assert b'"usage":{"prompt_tokens"' in out and b'"model":"alias"' in out and b'"model":"up"' not in out
    without = CHAT_OVER_MESSAGES.stream("alias", {}, False)
    out = without.feed(raw) + without.close()
    assert b'"usage"' not in out and b'"model":"up"' in out


def test_errors_take_the_client_shape() -> None:
    openai_body = b'{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}'
    assert orjson.loads(MESSAGES_OVER_CHAT.error(400, openai_body)) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    anthropic_body = b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'
    assert orjson.loads(CHAT_OVER_MESSAGES.error(529, anthropic_body))["error"]["code"] == "overloaded_error"
