"""Whole (non-streaming) responses: chat.completion as an Anthropic message, and the reverse.

Only the first choice is converted (requests converted by this package ask for one). Reasoning arrives as
``reasoning_content`` (DeepSeek, vLLM, SGLang) or ``reasoning`` (OpenRouter, newer vLLM) and becomes a
thinking block; thinking blocks become ``reasoning_content``. Anthropic blocks with no Chat Completions
counterpart (redacted thinking, server tool results) are left out of the converted answer.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from onwards.convert.errors import UpstreamFormatError
from onwards.convert.mapping import (
    anthropic_stop,
    anthropic_usage,
    chat_id,
    message_id,
    openai_finish,
    openai_usage,
    tool_id,
)

__all__ = ["chat_completion_to_message", "message_to_chat_completion", "reasoning_of"]


def reasoning_of(message: dict[str, Any]) -> str:
    value = message.get("reasoning_content")
    if not isinstance(value, str) or not value:
        value = message.get("reasoning")
    return value if isinstance(value, str) else ""


def _tool_input(arguments: Any) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamFormatError("the provider returned tool call arguments that are not a JSON object")
    return parsed


def chat_completion_to_message(body: Any, model: str) -> dict[str, Any]:
    """``model`` names the answer when the provider's body does not."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        raise UpstreamFormatError("the provider's answer is not a chat completion")
    choice = body["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise UpstreamFormatError("the provider's chat completion has no message")
    content: list[dict[str, Any]] = []
    reasoning = reasoning_of(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):  # a few servers answer with content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if not text and isinstance(message.get("refusal"), str):
        text = message["refusal"]
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise UpstreamFormatError("the provider returned a malformed tool call")
        function = call["function"]
        content.append(
            {
                "type": "tool_use",
                "id": tool_id(call.get("id")),
                "name": function.get("name") or "",
                "input": _tool_input(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = anthropic_stop(choice.get("finish_reason"), choice.get("stop_reason"))
    return {
        "id": message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(body.get("usage")),
    }


def message_to_chat_completion(body: Any, model: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise UpstreamFormatError("the provider's answer is not an Anthropic message")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in body["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": tool_id(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    return {
        "id": chat_id(body.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": openai_finish(body.get("stop_reason")),
            }
        ],
        "usage": openai_usage(body.get("usage")),
    }
