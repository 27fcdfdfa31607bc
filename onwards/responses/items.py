"""Responses input items -> Chat Completions messages.

The rule: every item either becomes part of a chat message or is refused with a 400 that
names it. Nothing is dropped silently, because a conversation with a hole in it gets a
confidently wrong answer. The one deliberate exception is a `reasoning` item: it is the
model's own earlier thinking, Chat Completions has no input slot for it, and leaving it out
does not change what the conversation says.
"""

from __future__ import annotations

from typing import Any

from onwards.responses.errors import ResponsesRequestError

Message = dict[str, Any]

# Chat-only backends (vLLM, SGLang, Ollama...) commonly reject the `developer` role.
_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


def input_to_messages(value: Any, param: str = "input") -> list[Message]:
    """A string is one user message; a list is converted item by item."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise ResponsesRequestError(f"'{param}' must be a string or a list of items.", param)
    messages: list[Message] = []
    for i, item in enumerate(value):
        _add_item(messages, item, f"{param}[{i}]")
    return messages


def _add_item(messages: list[Message], item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise ResponsesRequestError(f"'{where}' must be an object.", where)
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"  # EasyInputMessage: {"role", "content"} without a type
    if kind == "message":
        messages.append(_message(item, where))
    elif kind == "function_call":
        _add_function_call(messages, item, where)
    elif kind == "function_call_output":
        call_id = _require_str(item, "call_id", where)
        messages.append({"role": "tool", "tool_call_id": call_id, "content": _tool_output(item, where)})
    elif kind == "reasoning":
        return
    else:
        raise ResponsesRequestError(
            f"Input item type '{kind}' at '{where}' is not supported by this model's Chat Completions "
            "adapter.",
            f"{where}.type",
            "unsupported_value",
        )


def _require_str(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise ResponsesRequestError(f"'{where}.{name}' must be a string.", f"{where}.{name}")
    return value


def _message(item: dict[str, Any], where: str) -> Message:
    role = _ROLES.get(item.get("role", ""))
    if role is None:
        raise ResponsesRequestError(
            f"'{where}.role' must be one of user, system, developer, assistant.", f"{where}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise ResponsesRequestError(f"'{where}.content' must be a string or a list.", f"{where}.content")
    parts = [_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)]
    if role != "user" or all(p["type"] == "text" for p in parts):
        # Only user messages may carry images or files in Chat Completions; text-only content is
        # sent as a plain string, which every backend accepts.
        if any(p["type"] != "text" for p in parts):
            raise ResponsesRequestError(
                f"Only user messages may contain images or files ('{where}').", f"{where}.content"
            )
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise ResponsesRequestError(f"'{where}' must be an object.", where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": _require_str(part, "text", where)}
    if kind == "refusal":
        return {"type": "text", "text": _require_str(part, "refusal", where)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise ResponsesRequestError(
                f"'{where}' needs an 'image_url' (a URL or data: URL); file_id images cannot be sent "
                "to a Chat Completions backend.",
                f"{where}.image_url",
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: dict[str, Any] = {
            k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None
        }
        if "file_data" not in file and "file_id" not in file:
            raise ResponsesRequestError(f"'{where}' needs 'file_data' or 'file_id'.", where)
        return {"type": "file", "file": file}
    raise ResponsesRequestError(
        f"Content part type '{kind}' at '{where}' is not supported by this model's Chat Completions adapter.",
        f"{where}.type",
        "unsupported_value",
    )


def _add_function_call(messages: list[Message], item: dict[str, Any], where: str) -> None:
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise ResponsesRequestError(f"'{where}.arguments' must be a string.", f"{where}.arguments")
    call = {
        "id": _require_str(item, "call_id", where),
        "type": "function",
        "function": {"name": _require_str(item, "name", where), "arguments": arguments},
    }
    last = messages[-1] if messages else None
    # A message item followed by function_call items (or parallel calls) is one assistant turn in
    # Chat Completions: content and tool_calls on the same message.
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        return
    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(item: dict[str, Any], where: str) -> str:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for i, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
                raise ResponsesRequestError(
                    f"'{where}.output[{i}]': only text parts can be sent to a Chat Completions backend.",
                    f"{where}.output",
                    "unsupported_value",
                )
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise ResponsesRequestError(f"'{where}.output' must be a string or a list of parts.", f"{where}.output")
