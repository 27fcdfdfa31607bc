"""An estimate of a Messages request's input tokens, for ``POST /v1/messages/count_tokens``.

Without the model's tokenizer the count is an estimate: about four characters of text per token (the
usual figure for English and code; tool schemas and tool inputs count as their JSON text), a few tokens of
framing per message and per tool, and a fixed 1,600 tokens per image (Anthropic's figure for an image at
the largest size it keeps). Good enough to budget a context window, not to bill by.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from onwards.convert.errors import ConversionError

__all__ = ["IMAGE_TOKENS", "estimate_input_tokens"]

IMAGE_TOKENS = 1600
_CHARS_PER_TOKEN = 4
_PER_MESSAGE = 4
_PER_TOOL = 8


class _Tally:
    __slots__ = ("chars", "tokens")

    def __init__(self) -> None:
        self.chars = 0
        self.tokens = 0

    def json(self, value: Any) -> None:
        self.chars += len(orjson.dumps(value))

    def blocks(self, content: Any) -> None:
        if isinstance(content, str):
            self.chars += len(content)
            return
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                self.chars += len(str(block.get("text", "")))
            elif kind in ("image", "document"):
                self.tokens += IMAGE_TOKENS
            elif kind == "tool_use":
                self.chars += len(str(block.get("name", "")))
                self.json(block.get("input", {}))
            elif kind == "tool_result":
                self.blocks(block.get("content"))
            elif kind == "thinking":
                self.chars += len(str(block.get("thinking", "")))
            else:
                self.json(block)


def estimate_input_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ConversionError("messages: expected a list", "messages")
    tally = _Tally()
    tally.blocks(body.get("system"))
    for message in messages:
        if not isinstance(message, dict):
            raise ConversionError("messages: every message must be an object", "messages")
        tally.tokens += _PER_MESSAGE
        tally.blocks(message.get("content"))
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            tally.tokens += _PER_TOOL
            tally.json(tool)
    return tally.tokens + math.ceil(tally.chars / _CHARS_PER_TOKEN)
