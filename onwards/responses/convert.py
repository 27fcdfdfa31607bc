"""Pure conversion between the Responses API and Chat Completions.

`to_chat_request` turns a Responses request (plus any earlier conversation and the schemas
of the server-side tools it enabled) into a Chat Completions request; `completion_to_items`
turns a Chat completion's message into Responses output items; `build_response` wraps items
into a Response object that echoes the request's settings, as the Responses API does.
No I/O here: the loop and the HTTP layer call these.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from onwards.responses import ids
from onwards.responses.errors import ResponsesRequestError
from onwards.responses.items import Message, input_to_messages

# Request fields copied to the chat request under the same name.
_SAME_NAME = ("temperature", "top_p", "parallel_tool_calls", "user", "stop", "seed", "service_tier")


def to_chat_request(
    request: dict[str, Any],
    history: Sequence[Message] = (),
    server_tools: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The Chat Completions body for `request`.

    `history` is the conversation of the previous response (without its instructions: the
    Responses API does not carry instructions over). `server_tools` are chat tool definitions
    of the server-side tools this request enabled; the request's own function tools are
    converted here and hosted tools must already have been resolved by the caller.
    """
    messages: list[Message] = []
    instructions = request.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        messages.extend(input_to_messages(instructions, "instructions"))
    elif instructions is not None:
        raise ResponsesRequestError("'instructions' must be a string.", "instructions")
    messages.extend(history)
    if "input" not in request:
        raise ResponsesRequestError("'input' is required.", "input")
    messages.extend(input_to_messages(request["input"]))

    chat: dict[str, Any] = {"model": request.get("model"), "messages": messages}
    for name in _SAME_NAME:
        if request.get(name) is not None:
            chat[name] = request[name]
    if request.get("max_output_tokens") is not None:
        chat["max_tokens"] = request["max_output_tokens"]
    tools = [*function_tools(request.get("tools") or ()), *server_tools]
    if tools:
        chat["tools"] = tools
    if request.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(request["tool_choice"])
    response_format = _response_format(request.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    reasoning = request.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    if request.get("top_logprobs"):
        chat["logprobs"] = True
        chat["top_logprobs"] = request["top_logprobs"]
    if request.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def function_tools(tools: Iterable[Any]) -> list[dict[str, Any]]:
    """The request's `function` tools in chat form; other tool types are the caller's business."""
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise ResponsesRequestError(f"'tools[{i}].name' must be a non-empty string.", f"tools[{i}].name")
        fn: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ResponsesRequestError(
        "'tool_choice' must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...} for this "
        "model's Chat Completions adapter.",
        "tool_choice",
        "unsupported_value",
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict) or not isinstance(text.get("format"), dict):
        return None
    fmt = text["format"]
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: v for k, v in fmt.items() if k != "type"}
        return {"type": "json_schema", "json_schema": schema}
    raise ResponsesRequestError(f"'text.format.type' '{kind}' is not supported.", "text.format.type")


def reasoning_text(message: dict[str, Any]) -> str:
    """The reasoning a backend put on a chat message, whichever field it used."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    details = message.get("reasoning_details")
    if isinstance(details, list):
        return "".join(str(d.get("text", "")) for d in details if isinstance(d, dict))
    return ""


def item_status(finish_reason: Any) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def reasoning_item(text: str, item_id: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    }


def message_item(parts: list[dict[str, Any]], item_id: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": parts}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(call_id: str, name: str, arguments: str, item_id: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def completion_to_items(
    completion: dict[str, Any], hidden_tools: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Output items of a chat completion's first choice; calls to `hidden_tools` (the
    server-side tools the gateway runs itself) are left out: they are not the client's to run."""
    choices = completion.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return []
    choice = choices[0]
    message = choice.get("message") or {}
    status = item_status(choice.get("finish_reason"))
    items: list[dict[str, Any]] = []
    thinking = reasoning_text(message)
    if thinking:
        items.append(reasoning_item(thinking, ids.reasoning_id(), status))
    parts = []
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if isinstance(content, str) and content:
        parts.append(text_part(content))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        items.append(message_item(parts, ids.message_id(), status))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        if fn.get("name") in hidden_tools:
            continue
        items.append(
            function_call_item(
                str(call.get("id", "")),
                str(fn.get("name", "")),
                str(fn.get("arguments", "")),
                ids.function_call_id(),
                status,
            )
        )
    return items


def chat_usage_to_response(usage: Any) -> dict[str, Any] | None:
    """Chat usage -> Responses usage, keeping cached and reasoning token counts (0 when absent)."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    cached = int(prompt_details.get("cached_tokens") or 0)
    # Newer SDKs require cache_write_tokens; Chat backends rarely report it, 0 then.
    cache_write = int(prompt_details.get("cache_write_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def add_usage(total: dict[str, Any] | None, more: dict[str, Any] | None) -> dict[str, Any] | None:
    """Sum of two Responses usages: a response that took several model calls reports them all."""
    if more is None:
        return total
    if total is None:
        return more
    return {
        "input_tokens": total["input_tokens"] + more["input_tokens"],
        "input_tokens_details": {
            key: total["input_tokens_details"][key] + more["input_tokens_details"][key]
            for key in ("cached_tokens", "cache_write_tokens")
        },
        "output_tokens": total["output_tokens"] + more["output_tokens"],
        "output_tokens_details": {
            "reasoning_tokens": total["output_tokens_details"]["reasoning_tokens"]
            + more["output_tokens_details"]["reasoning_tokens"]
        },
        "total_tokens": total["total_tokens"] + more["total_tokens"],
    }


def response_status(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    """Response status and incomplete_details for the last model call's finish reason."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def build_response(
    request: dict[str, Any],
    response_id: str,
    *,
    created_at: int | None = None,
    output: list[dict[str, Any]] | None = None,
    status: str = "completed",
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Response object that echoes the request's settings, as the Responses API does."""
    text = request.get("text") if isinstance(request.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request.get("model"),
        "output": output or [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning"),
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": text,
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": usage,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }
