"""A whole answer replayed as a stream, for a client that asked to stream from a provider that answered
with one JSON body (some servers ignore ``stream: true``, for example when tools are offered).

The events are the ones the stream translators would have produced for the same answer, so a client sees
no difference beyond the timing.
"""

from __future__ import annotations

from typing import Any

import orjson

from onwards.convert.sse import anthropic_event, openai_data

__all__ = ["chat_completion_stream", "message_stream"]


def _block_events(index: int, block: dict[str, Any]) -> bytes:
    kind = block.get("type")
    if kind == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        delta: dict[str, Any] = {"type": "text_delta", "text": block.get("text", "")}
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        delta = {"type": "thinking_delta", "thinking": block.get("thinking", "")}
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
        delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input", {})).decode()}
    else:
        return b""
    return (
        anthropic_event({"type": "content_block_start", "index": index, "content_block": start})
        + anthropic_event({"type": "content_block_delta", "index": index, "delta": delta})
        + anthropic_event({"type": "content_block_stop", "index": index})
    )


def message_stream(message: dict[str, Any]) -> bytes:
    """An Anthropic message (as chat_completion_to_message builds it) as Anthropic stream events."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": 0, "output_tokens": 0}
    out = anthropic_event({"type": "message_start", "message": start}) + anthropic_event({"type": "ping"})
    for index, block in enumerate(message.get("content", [])):
        out += _block_events(index, block)
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    out += anthropic_event({"type": "message_delta", "delta": delta, "usage": message.get("usage", {})})
    return out + anthropic_event({"type": "message_stop"})


def chat_completion_stream(completion: dict[str, Any], include_usage: bool) -> bytes:
    """A chat.completion (as message_to_chat_completion builds it) as chunk events and [DONE]."""
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    if include_usage:
        base["usage"] = None
    choice = completion["choices"][0]
    message = choice["message"]
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if message.get("reasoning_content"):
        deltas.append({"reasoning_content": message["reasoning_content"]})
    if message.get("content"):
        deltas.append({"content": message["content"]})
    for position, call in enumerate(message.get("tool_calls") or ()):
        deltas.append({"tool_calls": [{"index": position, **call}]})
    out = b""
    for delta in deltas:
        out += openai_data(
            {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
        )
    finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")}
    out += openai_data({**base, "choices": [finish]})
    if include_usage:
        out += openai_data({**base, "choices": [], "usage": completion.get("usage")})
    return out + b"data: [DONE]\n\n"
