"""OpenAI chat.completion.chunk SSE as an Anthropic Messages SSE stream, incrementally.

Each ``feed`` returns the Anthropic events for the chunk events completed so far; nothing waits for the end
of the stream. The first chunk opens the message (``message_start``, then ``ping``). Reasoning deltas,
text deltas and each tool call get their own content block, opened on first use and closed when another
kind starts. finish_reason is held until the stream ends ([DONE] or the end of the body) because OpenAI
sends usage in a later chunk; then the open block closes and ``message_delta`` (stop reason, usage) and
``message_stop`` follow. An upstream error event, an unreadable event or a stream that ends before any
finish_reason ends the translation with an Anthropic ``error`` event.
"""

from __future__ import annotations

from typing import Any

import orjson

from onwards.convert.errors import anthropic_error_type
from onwards.convert.mapping import anthropic_stop, anthropic_usage, message_id, tool_id
from onwards.convert.replies import reasoning_of
from onwards.convert.sse import SseReader, SseTooLarge, anthropic_event

__all__ = ["ChatToMessagesStream"]

_PING = anthropic_event({"type": "ping"})
_STOP = anthropic_event({"type": "message_stop"})


class ChatToMessagesStream:
    def __init__(self, model: str, *, force_model: bool = False) -> None:
        """``model`` names the message when the provider's chunks do not, or always with force_model."""
        self._reader = SseReader()
        self._model = model
        self._force_model = force_model
        self._started = False
        self._done = False
        self.completed = False
        self._next_index = 0
        self._open: tuple[str, int] | None = None  # (kind, block index); kind "text", "thinking" or "tool:N"
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._tool_ids: dict[int, str] = {}  # OpenAI tool call index -> the id its call started with
        self._finish: Any = None
        self._matched: Any = None
        self.usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        try:
            events = self._reader.feed(chunk)
        except SseTooLarge as exc:
            return self._fail(500, str(exc))
        return self._events(events)

    def close(self) -> bytes:
        """The upstream body ended."""
        if self._done:
            return b""
        out = self._events(self._reader.close())
        if self._done:
            return out
        if self._finish is not None:
            return out + self._end()
        return out + self._fail(502, "The upstream stream ended before the response was complete.")

    def _events(self, events: list[Any]) -> bytes:
        out = bytearray()
        for event in events:
            if self._done:
                break
            data = event.data
            if data == b"[DONE]":
                out += self._end()
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                out += self._fail(502, "The upstream provider sent an unreadable stream event.")
                continue
            if not isinstance(chunk, dict):
                out += self._fail(502, "The upstream provider sent an unreadable stream event.")
            elif "error" in chunk:
                err = chunk["error"]
                message = err.get("message") if isinstance(err, dict) else err
                out += self._fail(500, str(message or "The upstream provider reported an error."))
            else:
                out += self._chunk(chunk)
        return bytes(out)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self._model if self._force_model else chunk.get("model") or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return anthropic_event({"type": "message_start", "message": message}) + _PING

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start(chunk)
        if chunk.get("usage"):
            self.usage = anthropic_usage(chunk["usage"])
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return out
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = reasoning_of(delta)
            if reasoning:
                out += self._delta("thinking", {"type": "thinking_delta", "thinking": reasoning})
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                out += self._delta("text", {"type": "text_delta", "text": text})
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        out += self._tool_call(call)
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            self._matched = choice.get("stop_reason")
        return out

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        index = self._next_index
        self._next_index += 1
        self._open = (kind, index)
        return out + anthropic_event({"type": "content_block_start", "index": index, "content_block": block})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        index = self._open[1]
        self._open = None
        return anthropic_event({"type": "content_block_stop", "index": index})

    def _delta(self, kind: str, delta: dict[str, Any]) -> bytes:
        out = b""
        if self._open is None or self._open[0] != kind:
            block = (
                {"type": "text", "text": ""} if kind == "text" else {"type": kind, kind: "", "signature": ""}
            )
            out = self._open_block(kind, block)
        assert self._open is not None
        return out + anthropic_event({"type": "content_block_delta", "index": self._open[1], "delta": delta})

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        position = call.get("index", 0)
        if type(position) is not int:
            position = 0
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        out = b""
        index = self._tools.get(position)
        given = call.get("id")
        # Some servers number every call 0; a new id at a known index is a new call, not more input.
        if index is None or (isinstance(given, str) and given and given != self._tool_ids[position]):
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tool_id(given),
                "name": function.get("name") or "",
                "input": {},
            }
            out = self._open_block(f"tool:{position}:{self._next_index}", block)
            index = self._tools[position] = self._next_index - 1
            self._tool_ids[position] = block["id"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # Calls normally arrive one after another; a late fragment of an earlier call still names its
            # own block index, which is how Anthropic clients assemble input_json_delta.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out += anthropic_event({"type": "content_block_delta", "index": index, "delta": delta})
        return out

    def _end(self) -> bytes:
        self._done = True
        self.completed = True  # ended as the protocol ends a stream, not cut short
        out = b"" if self._started else self._start({})
        out += self._close_block()
        stop_reason, stop_sequence = anthropic_stop(self._finish, self._matched)
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        return out + anthropic_event({"type": "message_delta", "delta": delta, "usage": self.usage}) + _STOP

    def _fail(self, status: int, message: str) -> bytes:
        self._done = True
        error = {"type": anthropic_error_type(status), "message": message}
        return anthropic_event({"type": "error", "error": error})
