"""The gateway's ModelClient: every model step is a Chat Completions request through the
gateway's own request path.

A step is handed to the proxy handler as an in-process ASGI request for
`/v1/chat/completions`, with the caller's headers (so it authenticates as the same key and
routes to the same target), its own request id and the per-step request id header. It
therefore gets everything a direct chat request gets, once per step: admission against the
key, target and provider limits (one round trip to admit, one to release), provider choice
and failover, timeouts, sanitization, token accounting, metrics and an access log line of its
own. With trace export on, the scope also carries the outer request's span, so each step's
span (and its upstream attempts) is a child of it. A step that the gateway or the upstream
refuses comes back as a ModelCallError with the status and body the client should see.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Scope

from onwards.edge.front import PATH_KEY
from onwards.responses.protocols import STEP_REQUEST_ID_HEADER, ModelCallError
from onwards.trace import STEP_PARENT_KEY

CHAT_PATH = "/v1/chat/completions"
# Replaced per step; accept-encoding too, as the loop must read the step's body itself.
_REPLACED = frozenset(
    {b"content-length", b"content-type", b"x-request-id", b"accept-encoding", b"transfer-encoding"}
)


class SubRequestModelClient:
    def __init__(self, app: ASGIApp, scope: Scope, client_gone: asyncio.Event, span: Any = None) -> None:
        self._app = app
        self._span = span
        self._scope = scope
        self._headers = [(n, v) for n, v in scope["headers"] if n not in _REPLACED]
        self._client_gone = client_gone

    def _step_scope(self, body: bytes, step_request_id: str) -> Scope:
        step_id = step_request_id.encode()
        headers = [
            *self._headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"accept-encoding", b"identity"),
            (b"x-request-id", step_id),
            (STEP_REQUEST_ID_HEADER.encode(), step_id),
        ]
        scope: Scope = {
            **self._scope,
            "path": CHAT_PATH,
            "raw_path": CHAT_PATH.encode(),
            PATH_KEY: CHAT_PATH,  # the canonical path the upstream call uses (onwards/edge/front.py)
            "query_string": b"",
            "headers": headers,
        }
        if self._span is not None:
            scope[STEP_PARENT_KEY] = (self._span, step_request_id)
        return scope

    async def complete(self, body: dict[str, Any], step_request_id: str) -> dict[str, Any]:
        chunks = [c async for c in self._call(body, step_request_id)]
        try:
            value = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise ModelCallError("the model's answer is not JSON") from None
        if not isinstance(value, dict):
            raise ModelCallError("the model's answer is not a JSON object")
        return value

    def stream(self, body: dict[str, Any], step_request_id: str) -> AsyncIterator[bytes]:
        return self._call(body, step_request_id)

    async def _call(self, body: dict[str, Any], step_request_id: str) -> AsyncIterator[bytes]:
        raw = orjson.dumps(body)
        out: asyncio.Queue[Message] = asyncio.Queue()
        step_gone = asyncio.Event()  # set when this step's reader stops early
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": raw, "more_body": False}
            # After the body, the handler only listens for a disconnect: the client's, or ours.
            waits = [asyncio.ensure_future(self._client_gone.wait()), asyncio.ensure_future(step_gone.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if step_gone.is_set():
                raise OSError("the step's reader has gone")
            await out.put(message)

        async def run() -> None:
            try:
                await self._app(self._step_scope(raw, step_request_id), receive, send)
            finally:
                await out.put({"type": "onwards.step.end"})

        task = asyncio.get_running_loop().create_task(run())
        try:
            start = await out.get()
            if start["type"] != "http.response.start":
                raise ModelCallError("the gateway ended the step without a response")
            status = int(start["status"])
            if status // 100 != 2:
                error_body = await _rest(out)
                raise ModelCallError(
                    f"the model call was answered with HTTP {status}",
                    status,
                    error_body,
                    code=_error_code(error_body),
                    headers=tuple(h for h in start.get("headers", ()) if h[0] == b"retry-after"),
                )
            while True:
                message = await out.get()
                if message["type"] != "http.response.body":
                    raise ModelCallError("the model stream ended before it was complete")
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    break
        finally:
            step_gone.set()
            with contextlib.suppress(Exception):
                await task


async def _rest(out: asyncio.Queue[Message]) -> bytes:
    parts = []
    while True:
        message = await out.get()
        if message["type"] != "http.response.body":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _error_code(body: bytes) -> str:
    try:
        value = orjson.loads(body)
        code = value["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "upstream_error"
    return code if isinstance(code, str) else "upstream_error"
