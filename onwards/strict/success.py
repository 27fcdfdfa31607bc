"""Strict mode's success sanitization: an upstream 2xx body rebuilt through the OpenAI schema.

Whatever the provider, the client gets the OpenAI shape: fields the schema does not know are
dropped (provider ids, costs, routing details), a few missing fields the schema requires are
filled in (an id, `object`, `created: 0`, positional `index`es, an assistant `role`), and
`model` is the name the client asked for. A body that still does not fit is refused
(SuccessBodyError -> 502 "Bad gateway"), never passed through. Trusted providers get the
same treatment: trust only concerns errors. Messages never quote the body.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import orjson

from onwards.strict.schema import Invalid, Schema
from onwards.strict.schemas import (
    CHAT_CHUNK,
    CHAT_RESPONSE,
    COMPLETION_CHUNK,
    COMPLETION_RESPONSE,
    EMBEDDINGS_RESPONSE,
    RESPONSES_EVENT,
    RESPONSES_RESPONSE,
)

Surface = Literal["chat", "completions", "embeddings", "responses"]


class SuccessBodyError(Exception):
    """The upstream success body cannot be read as this surface's response; the message names
    the field, never its value."""


def chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4()}"


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4()}"


def response_id() -> str:
    return f"resp_{uuid.uuid4()}"


def fallback_id(surface: Surface) -> str:
    """The id a stream's chunks share when the provider sent none."""
    if surface == "completions":
        return completion_id()
    if surface == "responses":
        return response_id()
    return chat_id()


def sanitize_success(surface: Surface, body: bytes, model: str) -> bytes:
    """A unary 2xx body for `surface`, rebuilt; raises SuccessBodyError."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SuccessBodyError("the upstream success body is not JSON") from None
    if surface == "chat":
        _fill_chat(value, model, chat_id())
        out = _read(CHAT_RESPONSE, value)
        for choice in out["choices"]:
            _canonical_reasoning(choice["message"])
    elif surface == "completions":
        _fill_completion(value, model, completion_id(), "text_completion", chunk=False)
        out = _read(COMPLETION_RESPONSE, value)
    elif surface == "embeddings":
        out = _read(EMBEDDINGS_RESPONSE, value)
    else:
        if type(value) is dict and "output" in value:
            _fill_response(value, model, response_id())
        out = _read(RESPONSES_RESPONSE, value)
    out["model"] = model
    return orjson.dumps(out)


def sanitize_chunk(surface: Surface, value: Any, model: str, stream_id: str) -> dict[str, Any]:
    """One decoded stream chunk (or Responses event), rebuilt; raises SuccessBodyError."""
    if surface == "responses":
        if type(value) is dict:
            response = value.get("response")
            if type(response) is dict:
                response.setdefault("status", _status_for_event(value.get("type")))
                _fill_response(response, model, stream_id)
        out = _read(RESPONSES_EVENT, value)
        if "response" in out:
            out["response"]["model"] = model
        return out
    if surface == "completions":
        _fill_completion(value, model, stream_id, "text_completion", chunk=True)
        out = _read(COMPLETION_CHUNK, value)
    else:
        _fill_chat_chunk(value, model, stream_id)
        out = _read(CHAT_CHUNK, value)
        for choice in out["choices"]:
            _canonical_reasoning(choice["delta"])
    out["model"] = model
    return out


def _read(schema: Schema, value: Any) -> Any:
    try:
        return schema.read(value, "")
    except Invalid as exc:
        raise SuccessBodyError(
            f"upstream body does not fit the schema at {exc.path or 'the top'}: {exc.problem}"
        ) from None


def _canonical_reasoning(message: dict[str, Any]) -> None:
    # Providers spell it `reasoning` or `reasoning_content`; one spelling keeps the field
    # stable for the caller when an alias fails over between providers.
    taken = message.pop("reasoning", None)
    if taken is not None and "reasoning_content" not in message:
        message["reasoning_content"] = taken


# --- back-fill: only fields the schema requires, only when absent (null stays an error) -------


def _fill_top(value: dict[str, Any], model: str, id_: str, object_: str) -> None:
    value.setdefault("id", id_)
    value.setdefault("object", object_)
    value.setdefault("created", 0)
    value.setdefault("model", model)


def _fill_chat(value: Any, model: str, id_: str) -> None:
    if type(value) is not dict or "choices" not in value:
        return
    _fill_top(value, model, id_, "chat.completion")
    for index, choice in _choices(value):
        choice.setdefault("index", index)
        message = choice.get("message")
        if type(message) is dict:
            message.setdefault("role", "assistant")
            _null_like_arguments(message)


def _fill_chat_chunk(value: Any, model: str, id_: str) -> None:
    if type(value) is not dict or "choices" not in value:
        return
    _fill_top(value, model, id_, "chat.completion.chunk")
    for index, choice in _choices(value):
        choice.setdefault("index", index)
        choice.setdefault("delta", {})


def _fill_completion(value: Any, model: str, id_: str, object_: str, *, chunk: bool) -> None:
    if type(value) is not dict or "choices" not in value:
        return
    _fill_top(value, model, id_, object_)
    for index, choice in _choices(value):
        choice.setdefault("index", index)
        if chunk:  # a unary choice without `text` stays an error, as in the Rust gateway
            choice.setdefault("text", "")


def _choices(value: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    choices = value.get("choices")
    if type(choices) is not list:
        return []
    return [(index, choice) for index, choice in enumerate(choices) if type(choice) is dict]


def _null_like_arguments(message: dict[str, Any]) -> None:
    # Some providers send `arguments: null` or "" for a call without arguments; "{}" is the
    # OpenAI spelling of "no arguments" and keeps client JSON parsers working.
    calls = message.get("tool_calls")
    if type(calls) is not list:
        return
    for call in calls:
        function = call.get("function") if type(call) is dict else None
        if type(function) is not dict:
            continue
        arguments = function.get("arguments")
        if arguments is None or (type(arguments) is str and arguments.strip() in ("", "null")):
            function["arguments"] = "{}"


_RESPONSE_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("object", "response"),
    ("created_at", 0),
    ("status", "completed"),
    ("output", []),
    ("tools", []),
    ("tool_choice", "auto"),
    ("truncation", "disabled"),
    ("parallel_tool_calls", True),
    ("top_p", 1.0),
    ("presence_penalty", 0.0),
    ("frequency_penalty", 0.0),
    ("top_logprobs", 0),
    ("temperature", 1.0),
    ("reasoning", None),
    ("store", False),
    ("background", False),
    ("service_tier", "default"),
)


def _fill_response(value: dict[str, Any], model: str, id_: str) -> None:
    value.setdefault("id", id_)
    value.setdefault("model", model)
    for name, default in _RESPONSE_DEFAULTS:
        if name not in value:
            value[name] = list(default) if isinstance(default, list) else default
    value.setdefault("text", {"format": {"type": "text"}})


_EVENT_STATUS = {
    "response.created": "in_progress",
    "response.in_progress": "in_progress",
    "response.completed": "completed",
    "response.failed": "failed",
    "response.incomplete": "incomplete",
    "response.cancelled": "cancelled",
    "response.canceled": "cancelled",
}


def _status_for_event(event_type: Any) -> str:
    return _EVENT_STATUS.get(event_type, "completed") if type(event_type) is str else "completed"
