"""Field maps shared by the whole-response and streaming converters: stop reasons, usage, ids.

Token accounting differs: OpenAI's prompt_tokens include cached tokens (prompt_tokens_details.cached_tokens
says how many), Anthropic's input_tokens exclude them (cache_read_input_tokens and
cache_creation_input_tokens are separate). Converting keeps totals equal in both directions.
"""

from __future__ import annotations

import secrets
from typing import Any

__all__ = [
    "anthropic_stop",
    "anthropic_usage",
    "chat_id",
    "message_id",
    "openai_finish",
    "openai_usage",
    "tool_id",
]

_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def anthropic_stop(finish_reason: Any, matched: Any = None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI finish_reason. ``matched`` is the stop string some
    OpenAI-compatible servers (vLLM) report on the choice as ``stop_reason``."""
    if finish_reason == "stop" and isinstance(matched, str) and matched:
        return "stop_sequence", matched
    return _FINISH_TO_STOP.get(finish_reason, "end_turn"), None


def openai_finish(stop_reason: Any) -> str:
    return _STOP_TO_FINISH.get(stop_reason, "stop")


def _int(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def anthropic_usage(usage: Any) -> dict[str, int]:
    """OpenAI usage as Anthropic usage."""
    if not isinstance(usage, dict):
        return {"input_tokens": 0, "output_tokens": 0}
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def openai_usage(usage: Any) -> dict[str, Any]:
    """Anthropic usage as OpenAI usage."""
    if not isinstance(usage, dict):
        usage = {}
    cache_read = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + cache_read + _int(usage.get("cache_creation_input_tokens"))
    completion = _int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def message_id(openai_id: Any) -> str:
    if isinstance(openai_id, str) and openai_id:
        if openai_id.startswith("msg_"):
            return openai_id
        return "msg_" + openai_id.removeprefix("chatcmpl-")
    return "msg_" + secrets.token_hex(12)


def chat_id(anthropic_id: Any) -> str:
    if isinstance(anthropic_id, str) and anthropic_id:
        return "chatcmpl-" + anthropic_id.removeprefix("msg_")
    return "chatcmpl-" + secrets.token_hex(12)


def tool_id(given: Any) -> str:
    """Tool call ids pass through unchanged; a provider that sends none gets a fresh one."""
    if isinstance(given, str) and given:
        return given
    return "toolu_" + secrets.token_hex(12)
