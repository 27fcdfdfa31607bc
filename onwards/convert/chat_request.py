"""An OpenAI Chat Completions request as an Anthropic Messages request.

Rules (docs/protocols.md lists them for users):
- ``system`` and ``developer`` messages, wherever they are, become the top-level ``system`` (Anthropic has no
  system turns inside the conversation).
- ``tool`` messages become ``tool_result`` blocks of a user turn; consecutive turns of one role are merged,
  as Anthropic expects roles to alternate.
- Assistant ``tool_calls`` become ``tool_use`` blocks; their ``arguments`` must be a JSON object. Earlier
  reasoning is dropped: Anthropic accepts only thinking blocks it signed itself.
- ``max_tokens`` is required by Anthropic: ``max_completion_tokens``, else ``max_tokens``, else
  DEFAULT_MAX_TOKENS.
- Tuning knobs with no counterpart (penalties, seed, logit_bias, ...) are dropped; fields that change what
  the answer is (``n`` > 1, logprobs, audio, JSON response formats, legacy functions) are a ConversionError.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from onwards.convert.errors import ConversionError
from onwards.convert.fields import need as _need

__all__ = ["DEFAULT_MAX_TOKENS", "chat_to_messages", "wants_usage"]

DEFAULT_MAX_TOKENS = 4096

# reasoning_effort as an Anthropic thinking budget (the API's minimum budget is 1024).
_BUDGETS = {"low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 65536}
_MIN_BUDGET = 1024

_REJECTED = {
    "functions": "legacy functions are not supported; use tools",
    "function_call": "legacy function_call is not supported; use tool_choice",
    "audio": "audio output is not supported by an Anthropic-format provider",
    "prediction": "predicted outputs are not supported by an Anthropic-format provider",
}


_TOOL_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _tool_use_id(call_id: str) -> str:
    """Anthropic takes tool ids of letters, digits, "_" and "-" only; ids from other servers
    ("functions.get_weather:0") are rewritten the same way in the call and in its result."""
    return _TOOL_ID_UNSAFE.sub("_", call_id) if _TOOL_ID_UNSAFE.search(call_id) else call_id


def _data_url_source(url: str, where: str) -> dict[str, Any]:
    header, sep, data = url.partition(",")
    media = header[5:].removesuffix(";base64")
    if not sep or not header.endswith(";base64") or not media:
        raise ConversionError(f"{where}: a data URL image must be base64 with a media type", where)
    return {"type": "base64", "media_type": media, "data": data}


def _image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    url = _need(url, str, f"{where}.image_url.url")
    if url.startswith("data:"):
        return {"type": "image", "source": _data_url_source(url, f"{where}.image_url.url")}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _unsupported(kind: Any, where: str) -> ConversionError:
    return ConversionError(
        f"{where}: content part type {kind!r} has no counterpart in the Anthropic Messages format of this "
        "model's provider",
        f"{where}.type",
    )


def _text(content: Any, where: str) -> str:
    """Content that may only hold text (system, developer, tool): a string or text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(_need(content, list, where)):
        _need(part, dict, f"{where}.{j}")
        if part.get("type") not in ("text", "refusal"):
            raise _unsupported(part.get("type"), f"{where}.{j}")
        texts.append(_need(part.get("text", part.get("refusal")), str, f"{where}.{j}.text"))
    return "\n\n".join(texts)


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(_need(content, list, where)):
        at = f"{where}.{j}"
        _need(part, dict, at)
        kind = part.get("type")
        if kind == "text":
            text = _need(part.get("text"), str, f"{at}.text")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part, at))
        else:
            raise _unsupported(kind, at)
    return blocks


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    text = _text(message.get("content"), f"{where}.content")
    if not text and isinstance(message.get("refusal"), str):
        text = message["refusal"]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    calls = message.get("tool_calls") or []
    for k, call in enumerate(_need(calls, list, f"{where}.tool_calls")):
        at = f"{where}.tool_calls.{k}"
        _need(call, dict, at)
        function = _need(call.get("function"), dict, f"{at}.function")
        raw = function.get("arguments") or "{}"
        try:
            arguments = orjson.loads(_need(raw, str, f"{at}.function.arguments"))
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise ConversionError(
                f"{at}.function.arguments: must be a JSON object", f"{at}.function.arguments"
            )
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_use_id(_need(call.get("id"), str, f"{at}.id")),
                "name": _need(function.get("name"), str, f"{at}.function.name"),
                "input": arguments,
            }
        )
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(_need(tools, list, "tools")):
        at = f"tools.{i}"
        _need(tool, dict, at)
        if tool.get("type", "function") != "function":
            raise ConversionError(f"{at}.type: only function tools can be converted", f"{at}.type")
        function = _need(tool.get("function"), dict, f"{at}.function")
        converted: dict[str, Any] = {"name": _need(function.get("name"), str, f"{at}.function.name")}
        if isinstance(function.get("description"), str):
            converted["description"] = function["description"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        converted["input_schema"] = _need(parameters, dict, f"{at}.function.parameters")
        out.append(converted)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    converted: dict[str, Any] | None
    if choice is None:
        converted = None
    elif choice == "auto":
        converted = {"type": "auto"}
    elif choice == "required":
        converted = {"type": "any"}
    elif choice == "none":
        converted = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        function = _need(choice.get("function"), dict, "tool_choice.function")
        converted = {"type": "tool", "name": _need(function.get("name"), str, "tool_choice.function.name")}
    else:
        raise ConversionError(f"tool_choice: unknown value {choice!r}", "tool_choice")
    if parallel is False and (converted is None or converted["type"] != "none"):
        converted = converted or {"type": "auto"}
        converted["disable_parallel_tool_use"] = True
    return converted


def _check_rejected(body: dict[str, Any]) -> None:
    for name, why in _REJECTED.items():
        if body.get(name) is not None:
            raise ConversionError(f"{name}: {why}", name)
    n = body.get("n")
    if n is not None and n != 1:
        raise ConversionError("n: an Anthropic-format provider returns one choice; n must be 1", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise ConversionError("logprobs: not available from an Anthropic-format provider", "logprobs")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise ConversionError("modalities: only text output is available", "modalities")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") not in (
        "text",
        "json_schema",
    ):
        raise ConversionError(
            "response_format: only json_schema (Anthropic structured outputs) and text can be converted",
            "response_format",
        )


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    where = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    out["max_tokens"] = DEFAULT_MAX_TOKENS if max_tokens is None else _need(max_tokens, int, where)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif stop:
        out["stop_sequences"] = [_need(s, str, f"stop.{i}") for i, s in enumerate(_need(stop, list, "stop"))]
    effort = body.get("reasoning_effort")
    if effort is not None and effort in _BUDGETS:
        # Anthropic wants budget_tokens < max_tokens; a budget that does not fit is shrunk, or thinking
        # is left off when even the minimum does not fit.
        budget = min(_BUDGETS[effort], out["max_tokens"] - 1)
        if budget >= _MIN_BUDGET:
            out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif effort not in (None, "none", "minimal"):
        raise ConversionError(f"reasoning_effort: unknown value {effort!r}", "reasoning_effort")


def chat_to_messages(body: dict[str, Any]) -> dict[str, Any]:
    """Raises ConversionError for input with no counterpart or of the wrong shape."""
    _check_rejected(body)
    out: dict[str, Any] = {"model": _need(body.get("model"), str, "model")}
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(_need(body.get("messages"), list, "messages")):
        where = f"messages.{i}"
        _need(message, dict, where)
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text(message.get("content"), f"{where}.content")
            if text:
                system.append({"type": "text", "text": text})
        elif role == "user":
            _append(messages, "user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            call_id = _tool_use_id(_need(message.get("tool_call_id"), str, f"{where}.tool_call_id"))
            result = {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": _text(message.get("content"), f"{where}.content"),
            }
            _append(messages, "user", [result])
        else:
            raise ConversionError(f"{where}.role: {role!r} cannot be converted", f"{where}.role")
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    out["messages"] = messages
    _sampling(body, out)
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and out.get("tools"):
        out["tool_choice"] = choice
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = _need(response_format.get("json_schema"), dict, "response_format.json_schema")
        schema = _need(spec.get("schema"), dict, "response_format.json_schema.schema")
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if body.get("stream") is True:
        out["stream"] = True
    return out


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether an OpenAI streaming client asked for a final usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
