"""A mock provider that speaks one protocol, OpenAI Chat Completions or Anthropic Messages, with tool calls.

It extends MockUpstream (same recording, ``x-mock-status`` / ``x-mock-delay``, ``fail_next`` and
lifecycle) with answers that a conversion test can check end to end:

* a request that offers tools and whose last turn is not a tool result gets a call of the first tool with
  ``{"city": "Paris"}``;
* a request whose last turn is a tool result gets the text ``result: <the result text>``;
* anything else gets ``hello from <name>``.

Both whole and streamed answers are written in the provider's own format (an Anthropic stream has
message_start, ping, block events, message_delta, message_stop; an OpenAI stream ends with a usage chunk
when asked and [DONE]). Errors are in the provider's own shape, and a 429 carries ``retry-after``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Literal

from aiohttp import web

from tests.support.mock_upstream import NAME_HEADER, MockUpstream, RecordedRequest, _BadControl, _sse, _words

Format = Literal["openai", "anthropic"]
TOOL_ARGS = {"city": "Paris"}
RETRY_AFTER = "7"


def _tool_result_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    return ""


class _Turn:
    """What to answer: a tool call (name) or a text."""

    def __init__(self, name: str, fmt: Format, body: dict[str, Any]) -> None:
        self.tool: str | None = None
        self.text = f"hello from {name}"
        messages = body.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        result = None
        if fmt == "openai" and last.get("role") == "tool":
            result = _tool_result_text(last.get("content"))
        if fmt == "anthropic" and isinstance(last.get("content"), list):
            for block in last["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    result = _tool_result_text(block.get("content"))
        tools = body.get("tools") or []
        if result is not None:
            self.text = f"result: {result}"
        elif tools:
            first = tools[0]
            self.tool = first["function"]["name"] if fmt == "openai" else first["name"]
        self.input_tokens = max(1, _words(messages))
        self.output_tokens = _words(self.text) if self.tool is None else 3
        self.call_id = ("call_" if fmt == "openai" else "toolu_") + uuid.uuid4().hex[:12]


class ProtocolUpstream(MockUpstream):
    def __init__(self, name: str = "proto", *, format: Format = "openai", **options: Any) -> None:
        super().__init__(name, **options)
        self.format: Format = format

    async def _answer(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        try:
            plan = self._plan(request)
        except _BadControl as exc:
            record.status = 400
            return self._protocol_error(400, str(exc))
        record.status = plan.status
        if plan.delay:
            await asyncio.sleep(plan.delay)
        if plan.status >= 400:
            return self._protocol_error(plan.status, f"mock upstream {self.name} answered {plan.status}")
        path = request.path.rstrip("/")
        try:
            body = json.loads(record.body)
        except ValueError:
            return self._protocol_error(400, "request body must be JSON")
        if self.format == "anthropic" and path.endswith("/messages/count_tokens"):
            return self._json(200, {"input_tokens": 42})
        route = "/messages" if self.format == "anthropic" else "/chat/completions"
        if request.method != "POST" or not path.endswith(route):
            return self._protocol_error(404, f"{self.format} mock has no route {request.method} {path}")
        turn = _Turn(self.name, self.format, body)
        model = body.get("model", "")
        if body.get("stream") is True:
            if self.format == "openai":
                options = body.get("stream_options")
                usage = isinstance(options, dict) and options.get("include_usage") is True
                events = _openai_events(turn, model, usage)
            else:
                events = _anthropic_events(turn, model)
            return await self._stream(request, record, events, plan)
        reply = _openai_body(turn, model) if self.format == "openai" else _anthropic_body(turn, model)
        return self._json(200, reply)

    def _protocol_error(self, status: int, message: str) -> web.Response:
        if self.format == "anthropic":
            kind = {429: "rate_limit_error", 529: "overloaded_error", 404: "not_found_error"}.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            )
            body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            kind = (
                "rate_limit_error"
                if status == 429
                else "server_error"
                if status >= 500
                else "invalid_request_error"
            )
            body = {"error": {"message": message, "type": kind, "param": None, "code": f"mock_{status}"}}
        headers = {NAME_HEADER: self.name}
        if status == 429:
            headers["retry-after"] = RETRY_AFTER
        return web.Response(
            status=status, body=json.dumps(body).encode(), content_type="application/json", headers=headers
        )


def _openai_usage(turn: _Turn) -> dict[str, Any]:
    return {
        "prompt_tokens": turn.input_tokens,
        "completion_tokens": turn.output_tokens,
        "total_tokens": turn.input_tokens + turn.output_tokens,
    }


def _openai_body(turn: _Turn, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text if turn.tool is None else None}
    if turn.tool is not None:
        message["tool_calls"] = [
            {
                "id": turn.call_id,
                "type": "function",
                "function": {"name": turn.tool, "arguments": json.dumps(TOOL_ARGS)},
            }
        ]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:12],
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "stop" if turn.tool is None else "tool_calls"}
        ],
        "usage": _openai_usage(turn),
    }


def _openai_events(turn: _Turn, model: str, usage: bool) -> list[bytes]:
    base = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:12],
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": ""})]
    if turn.tool is None:
        half = len(turn.text) // 2
        events += [chunk({"content": turn.text[:half]}), chunk({"content": turn.text[half:]})]
    else:
        arguments = json.dumps(TOOL_ARGS)
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": turn.call_id,
                            "type": "function",
                            "function": {"name": turn.tool, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in (arguments[:5], arguments[5:]):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    events.append(chunk({}, "stop" if turn.tool is None else "tool_calls"))
    if usage:
        events.append(_sse({**base, "choices": [], "usage": _openai_usage(turn)}))
    events.append(_sse("[DONE]"))
    return events


def _anthropic_body(turn: _Turn, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = (
        [{"type": "text", "text": turn.text}]
        if turn.tool is None
        else [{"type": "tool_use", "id": turn.call_id, "name": turn.tool, "input": TOOL_ARGS}]
    )
    return {
        "id": "msg_" + uuid.uuid4().hex[:12],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "end_turn" if turn.tool is None else "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens},
    }


def _anthropic_events(turn: _Turn, model: str) -> list[bytes]:
    def ev(payload: dict[str, Any]) -> bytes:
        return _sse(payload, payload["type"])

    start = _anthropic_body(turn, model)
    start.update(content=[], stop_reason=None, usage={"input_tokens": turn.input_tokens, "output_tokens": 1})
    events = [ev({"type": "message_start", "message": start})]
    if turn.tool is None:
        half = len(turn.text) // 2
        events.append(
            ev({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        )
        events.append(ev({"type": "ping"}))
        for piece in (turn.text[:half], turn.text[half:]):
            events.append(
                ev(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
            )
    else:
        block = {"type": "tool_use", "id": turn.call_id, "name": turn.tool, "input": {}}
        events.append(ev({"type": "content_block_start", "index": 0, "content_block": block}))
        arguments = json.dumps(TOOL_ARGS)
        for piece in (arguments[:5], arguments[5:]):
            events.append(
                ev(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                )
            )
    events.append(ev({"type": "content_block_stop", "index": 0}))
    stop = "end_turn" if turn.tool is None else "tool_use"
    events.append(
        ev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": turn.output_tokens},
            }
        )
    )
    events.append(ev({"type": "message_stop"}))
    return events
