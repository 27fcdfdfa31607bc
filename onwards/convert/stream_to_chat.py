"""An Anthropic Messages SSE stream as OpenAI chat.completion.chunk SSE, incrementally.

``message_start`` gives the first chunk (role only); text, thinking and tool input deltas become content,
``reasoning_content`` and ``tool_calls`` deltas; ``message_delta`` gives the chunk with finish_reason;
``message_stop`` ends with a usage chunk (empty choices, only when the client asked for
``stream_options.include_usage``) and ``data: [DONE]``. ``ping`` and signature/citation deltas have no
counterpart and are dropped. An Anthropic ``error`` event, an unreadable event, or a body that ends before
the message is complete ends the translation with an OpenAI-shaped error chunk, then [DONE].
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from onwards.convert.errors import openai_error_type
from onwards.convert.mapping import chat_id, openai_finish, openai_usage, tool_id
from onwards.convert.sse import SseReader, SseTooLarge, openai_data

__all__ = ["MessagesToChatStream"]

_DONE = b"data: [DONE]\n\n"


class MessagesToChatStream:
    def __init__(self, model: str, include_usage: bool, *, force_model: bool = False) -> None:
        """``model`` names the chunks when the provider's message does not, or always with force_model."""
        self._reader = SseReader()
        self._force_model = force_model
        self._include_usage = include_usage
        self._model = model
        self._id = chat_id(None)
        self._created = int(time.time())
        self._done = False
        self.completed = False
        self._stopped = False  # message_delta with a stop reason seen
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._usage_in: dict[str, Any] = {}
        self.usage: dict[str, Any] = openai_usage({})

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        try:
            events = self._reader.feed(chunk)
        except SseTooLarge as exc:
            return self._fail("api_error", str(exc))
        return self._events(events)

    def close(self) -> bytes:
        if self._done:
            return b""
        out = self._events(self._reader.close())
        if self._done:
            return out
        if self._stopped:
            return out + self._end()
        return out + self._fail("api_error", "The upstream stream ended before the response was complete.")

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            payload["usage"] = None
        return openai_data(payload)

    def _events(self, events: list[Any]) -> bytes:
        out = bytearray()
        for event in events:
            if self._done:
                break
            try:
                payload = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                out += self._fail("api_error", "The upstream provider sent an unreadable stream event.")
                continue
            if not isinstance(payload, dict):
                out += self._fail("api_error", "The upstream provider sent an unreadable stream event.")
                continue
            out += self._event(payload.get("type") or event.event, payload)
        return bytes(out)

    def _event(self, kind: Any, payload: dict[str, Any]) -> bytes:
        if kind == "content_block_delta":
            return self._block_delta(payload)
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "message_start":
            message = payload.get("message")
            message = message if isinstance(message, dict) else {}
            self._id = chat_id(message.get("id"))
            if not self._force_model:
                self._model = message.get("model") or self._model
            if isinstance(message.get("usage"), dict):
                self._usage_in.update(message["usage"])
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            if isinstance(payload.get("usage"), dict):
                self._usage_in.update(payload["usage"])
            delta = payload.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            if stop is None:
                return b""
            self._stopped = True
            return self._chunk({}, openai_finish(stop))
        if kind == "message_stop":
            return self._end()
        if kind == "error":
            error = payload.get("error")
            error = error if isinstance(error, dict) else {}
            message = error.get("message") or "The upstream provider reported an error."
            return self._fail(str(error.get("type") or "api_error"), str(message))
        return b""  # ping, content_block_stop, and event types added later

    def _block_start(self, payload: dict[str, Any]) -> bytes:
        block = payload.get("content_block")
        if not isinstance(block, dict):
            return b""
        kind = block.get("type")
        if kind == "tool_use":
            position = len(self._tools)
            self._tools[payload.get("index", -1)] = position
            call = {
                "index": position,
                "id": tool_id(block.get("id")),
                "type": "function",
                "function": {"name": block.get("name") or "", "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        if kind == "thinking" and block.get("thinking"):
            return self._chunk({"reasoning_content": block["thinking"]})
        return b""

    def _block_delta(self, payload: dict[str, Any]) -> bytes:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return b""
        kind = delta.get("type")
        if kind == "text_delta":
            return self._chunk({"content": delta.get("text", "")})
        if kind == "input_json_delta":
            position = self._tools.get(payload.get("index", -1))
            if position is None:
                return b""  # input of a server tool block, which has no Chat Completions counterpart
            call = {"index": position, "function": {"arguments": delta.get("partial_json", "")}}
            return self._chunk({"tool_calls": [call]})
        if kind == "thinking_delta":
            return self._chunk({"reasoning_content": delta.get("thinking", "")})
        return b""

    def _end(self) -> bytes:
        self._done = True
        self.completed = True  # ended as the protocol ends a stream, not cut short
        self.usage = openai_usage(self._usage_in)
        out = b""
        if self._include_usage:
            out = openai_data(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": self.usage,
                }
            )
        return out + _DONE

    def _fail(self, a_type: str, message: str) -> bytes:
        self._done = True
        error = {"message": message, "type": openai_error_type(a_type), "param": None, "code": a_type}
        return openai_data({"error": error}) + _DONE
