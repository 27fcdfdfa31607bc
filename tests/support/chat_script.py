"""A Chat-Completions-only upstream whose answers follow the conversation, plus HTTP tools.

For the Responses tests: the gateway's adapter must turn everything into Chat Completions, so
`/responses` here is a 404. The answer to a chat request is decided by its messages:

* last message a tool result -> text `tool said: <content>` (unless the user asked to loop);
* last user text `call <name> <json>` -> a tool call to <name> with those arguments;
  `call <a> <json> and <b> <json>` -> two parallel calls;
* last user text containing `loop <name>` -> always a call to <name>, even after tool results;
* last message a tool result and the user text containing `then fail` -> HTTP 500;
* user text containing `think` -> `reasoning_content` "hmm, let me see" before the answer;
* user text containing `slowly` -> a long text streamed one chunk every 0.3 s, or without streaming an
  answer after 18 s (a client can leave mid-way);
* anything else -> text `echo: <last user text> (messages=<count>)`.

Usage is 10 prompt tokens per message (2 of them cached) and 5 completion tokens (1 of reasoning),
so the steps of a tool loop report different usage. Streams split the text and the arguments into
several chunks and end with a usage chunk when `stream_options.include_usage` is set.
`POST /tools/<name>` is a tool: it answers `{"tool": name, "args": <body>}`, or HTTP 500 for the
tool named `broken`.
Runs in a background thread; `requests` and `tool_requests` record what arrived.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any

from aiohttp import web

from tests.support.processes import free_port

_CALL = re.compile(r"call (\w+) (\{.*?\})(?: and (\w+) (\{.*?\}))?$")
_LOOP = re.compile(r"loop (\w+)")


def _user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
            return str(content)
    return ""


def decide(messages: list[dict[str, Any]]) -> tuple[str | None, list[tuple[str, str]]]:
    """(text, [(tool name, arguments)]) for a conversation."""
    text = _user_text(messages)
    looping = _LOOP.search(text)
    if looping:
        return None, [(looping.group(1), "{}")]
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return f"tool said: {last.get('content')}", []
    call = _CALL.search(text)
    if call:
        calls = [(call.group(1), call.group(2))]
        if call.group(3):
            calls.append((call.group(3), call.group(4)))
        return None, calls
    return f"echo: {text} (messages={len(messages)})", []


class ChatScript:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []  # {"path", "headers", "body"}
        self.tool_requests: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._counter = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def start(self) -> ChatScript:
        self._thread = threading.Thread(target=self._run, name="chat-script", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("chat script upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ChatScript:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/tools/{name}", self._tool)
        app.router.add_route("*", "/{tail:.*}", self._other)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _other(self, request: web.Request) -> web.Response:
        self.requests.append(
            {"path": request.path, "headers": dict(request.headers), "body": await request.read()}
        )
        return web.json_response(
            {"error": {"message": "not here", "type": "invalid_request_error"}}, status=404
        )

    async def _tool(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        self.tool_requests.append({"name": name, "headers": dict(request.headers), "body": body})
        if name == "broken":
            return web.Response(status=500, text="tool exploded")
        return web.json_response({"tool": name, "args": body})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        self._counter += 1
        messages = body.get("messages") or []
        if messages and messages[-1].get("role") == "tool" and "then fail" in _user_text(messages):
            return web.json_response(
                {"error": {"message": "upstream broke", "type": "server_error"}}, status=500
            )
        text, calls = decide(messages)
        tool_calls = [
            {"id": f"call_{self._counter}_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ]
        finish = "tool_calls" if calls else "stop"
        usage = {
            "prompt_tokens": 10 * len(messages),
            "completion_tokens": 5,
            "total_tokens": 10 * len(messages) + 5,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        }
        base = {"id": f"chatcmpl-{self._counter}", "created": 1, "model": body.get("model")}
        if not body.get("stream"):
            if "slowly" in _user_text(messages):
                await asyncio.sleep(18)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if "think" in _user_text(messages):
                message["reasoning_content"] = "hmm, let me see"
            if tool_calls:
                message["tool_calls"] = tool_calls
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return web.json_response(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> None:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        await send({"role": "assistant", "content": ""})
        if "think" in _user_text(messages):
            for piece in ("hmm, ", "let me ", "see"):
                await send({"reasoning_content": piece})
        pause = 0.0
        if "slowly" in _user_text(messages):
            text, pause = "slow " * 60, 0.3
        if text:
            for i in range(0, len(text), 4):
                await send({"content": text[i : i + 4]})
                if pause:
                    await asyncio.sleep(pause)
        for i, call in enumerate(tool_calls):
            args = call["function"]["arguments"]
            first = {
                "index": i,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"]},
            }
            await send({"tool_calls": [{**first, "function": {**first["function"], "arguments": ""}}]})
            for j in range(0, len(args), 3):
                await send({"tool_calls": [{"index": i, "function": {"arguments": args[j : j + 3]}}]})
        await send({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(None, usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
