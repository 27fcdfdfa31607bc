"""An Anthropic Messages request as an OpenAI Chat Completions request.

Rules (docs/protocols.md lists them for users):
- ``system`` (a string or text blocks) becomes one leading system message; blocks are joined by a blank line.
- User ``tool_result`` blocks become ``tool`` messages placed before the rest of that user turn, because
  OpenAI wants them right after the assistant's ``tool_calls``. Images inside a tool result have no place in
  a tool message, so they follow in the user message.
- Assistant ``tool_use`` blocks become ``tool_calls``; earlier ``thinking`` blocks are dropped (Chat
  Completions has no field to send reasoning back).
- ``cache_control`` and citations are hints without a counterpart and are dropped; ``top_k`` too.
- ``thinking`` and ``output_config.effort`` are dropped: Chat Completions servers disagree on
  ``reasoning_effort`` (OpenAI refuses it for models that do not reason, and Claude Code asks for thinking
  by default), while a model that reasons does so by its own default and its reasoning still comes back.
- Anything else with no counterpart (documents, server tools, MCP servers, ...) is a ConversionError.
"""

from __future__ import annotations

from typing import Any

import orjson

from onwards.convert.errors import ConversionError
from onwards.convert.fields import need as _need

__all__ = ["messages_to_chat"]

_REJECTED_FIELDS = ("mcp_servers", "container")


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = _need(block.get("source"), dict, f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media = _need(source.get("media_type"), str, f"{where}.source.media_type")
        data = _need(source.get("data"), str, f"{where}.source.data")
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        url = _need(source.get("url"), str, f"{where}.source.url")
    else:
        raise ConversionError(
            f"{where}.source: image source type {kind!r} cannot be sent to an OpenAI-format provider "
            "(use base64 or url)",
            f"{where}.source.type",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _unsupported(kind: Any, where: str) -> ConversionError:
    return ConversionError(
        f"{where}: content block type {kind!r} has no counterpart in the OpenAI Chat Completions format "
        "of this model's provider",
        f"{where}.type",
    )


def _text_of_blocks(blocks: list[Any], where: str) -> str:
    texts = []
    for j, block in enumerate(blocks):
        _need(block, dict, f"{where}.{j}")
        if block.get("type") != "text":
            raise _unsupported(block.get("type"), f"{where}.{j}")
        texts.append(_need(block.get("text"), str, f"{where}.{j}.text"))
    return "\n\n".join(texts)


def _document_text(block: dict[str, Any], where: str) -> str:
    """A plain-text document as text (its title first); PDFs and files have no Chat Completions form
    every OpenAI-compatible server reads, so they stay refused."""
    source = _need(block.get("source"), dict, f"{where}.source")
    kind = source.get("type")
    if kind == "text":
        text = _need(source.get("data"), str, f"{where}.source.data")
    elif kind == "content":
        content = source.get("content")
        text = (
            content
            if isinstance(content, str)
            else _text_of_blocks(_need(content, list, f"{where}.source.content"), f"{where}.source.content")
        )
    else:
        raise ConversionError(
            f"{where}.source: a document of source type {kind!r} cannot be sent to an OpenAI-format provider "
            "(plain-text documents can)",
            f"{where}.source.type",
        )
    title = block.get("title")
    return f"{title}\n\n{text}" if isinstance(title, str) and title else text


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool message for one tool_result block, and the images it carried."""
    call_id = _need(block.get("tool_use_id"), str, f"{where}.tool_use_id")
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts = []
        for j, part in enumerate(_need(content, list, f"{where}.content")):
            _need(part, dict, f"{where}.content.{j}")
            kind = part.get("type")
            if kind == "text":
                texts.append(_need(part.get("text"), str, f"{where}.content.{j}.text"))
            elif kind == "image":
                images.append(_image_part(part, f"{where}.content.{j}"))
            elif kind == "document":
                texts.append(_document_text(part, f"{where}.content.{j}"))
            else:
                raise _unsupported(kind, f"{where}.content.{j}")
        text = "\n\n".join(texts)
    if block.get("is_error") is True:
        # OpenAI tool messages have no error flag; the model still has to learn that the call failed.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user_messages(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    blocks = _need(content, list, where)
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.{j}"
        _need(block, dict, at)
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": _need(block.get("text"), str, f"{at}.text")})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "document":
            parts.append({"type": "text", "text": _document_text(block, at)})
        elif kind == "tool_result":
            message, images = _tool_result(block, at)
            tools.append(message)
            parts.extend(images)
        else:
            raise _unsupported(kind, at)
    out = list(tools)
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant_message(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(_need(content, list, where)):
        at = f"{where}.{j}"
        _need(block, dict, at)
        kind = block.get("type")
        if kind == "text":
            texts.append(_need(block.get("text"), str, f"{at}.text"))
        elif kind == "tool_use":
            arguments = block.get("input", {})
            calls.append(
                {
                    "id": _need(block.get("id"), str, f"{at}.id"),
                    "type": "function",
                    "function": {
                        "name": _need(block.get("name"), str, f"{at}.name"),
                        "arguments": orjson.dumps(arguments).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise _unsupported(kind, at)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(_need(tools, list, "tools")):
        at = f"tools.{i}"
        _need(tool, dict, at)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise ConversionError(
                f"{at}: the server tool {kind!r} runs only on Anthropic's API and has no counterpart at an "
                "OpenAI-format provider",
                f"{at}.type",
            )
        function: dict[str, Any] = {"name": _need(tool.get("name"), str, f"{at}.name")}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        function["parameters"] = _need(
            tool.get("input_schema", {"type": "object"}), dict, f"{at}.input_schema"
        )
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    _need(choice, dict, "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        name = _need(choice.get("name"), str, "tool_choice.name")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise ConversionError(f"tool_choice.type: unknown value {kind!r}", "tool_choice.type")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _output_format(config: dict[str, Any], out: dict[str, Any]) -> None:
    """Structured output (a JSON schema) becomes a json_schema response_format."""
    output_format = config.get("format")
    if output_format is None:
        return
    _need(output_format, dict, "output_config.format")
    if output_format.get("type") != "json_schema":
        raise ConversionError("output_config.format.type: must be 'json_schema'", "output_config.format.type")
    schema = _need(output_format.get("schema"), dict, "output_config.format.schema")
    out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """Raises ConversionError for input with no counterpart or of the wrong shape."""
    for name in _REJECTED_FIELDS:
        if body.get(name):
            raise ConversionError(f"{name}: not supported by an OpenAI-format provider", name)
    out: dict[str, Any] = {"model": _need(body.get("model"), str, "model")}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = system if isinstance(system, str) else _text_of_blocks(_need(system, list, "system"), "system")
        if text:
            messages.append({"role": "system", "content": text})
    for i, message in enumerate(_need(body.get("messages"), list, "messages")):
        where = f"messages.{i}"
        _need(message, dict, where)
        role = message.get("role")
        if role == "user":
            messages.extend(_user_messages(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            messages.append(_assistant_message(message.get("content"), f"{where}.content"))
        else:
            raise ConversionError(f"{where}.role: must be 'user' or 'assistant'", f"{where}.role")
    out["messages"] = messages

    out["max_tokens"] = _need(body.get("max_tokens"), int, "max_tokens")
    output = body.get("output_config")
    if output is not None:
        _output_format(_need(output, dict, "output_config"), out)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if stops:
        out["stop"] = [
            _need(s, str, f"stop_sequences.{i}") for i, s in enumerate(_need(stops, list, "stop_sequences"))
        ]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out
