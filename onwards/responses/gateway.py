"""`/v1/responses` for targets with the adapter on: one request, served by the response loop.

The proxy handler routes and authenticates the request, then hands it here instead of to its
own admission and attempts. This module checks the request (hosted tools known, no name
collisions, previous_response_id found), converts it, and runs `run_response_loop` with the
built-in step store, the target's HTTP tools and a model client whose every step is a
`/v1/chat/completions` request through the gateway itself (so limits, failover, metrics and
the access log apply per step). The answer is a Response object, or with `stream: true` the
Responses SSE events as the model produces them. Finished responses are kept in the response
store unless the request says `store: false`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onwards.errors import INTERNAL, error_body
from onwards.responses import convert, ids
from onwards.responses.errors import ResponsesRequestError
from onwards.responses.http import HttpToolExecutor
from onwards.responses.items import input_to_messages
from onwards.responses.loop import LoopConfig, ResponseFailed, StepLimitExceeded, run_response_loop
from onwards.responses.metrics import ResponsesMetrics
from onwards.responses.plan import ResponsesPlan
from onwards.responses.protocols import ToolExecutor
from onwards.responses.steps import ConversationSteps
from onwards.responses.store import ResponseStore, ResponseStoreError, StoredResponse, valid_id
from onwards.responses.stream import Event, encode_event
from onwards.responses.subrequest import SubRequestModelClient
from onwards.responses.traced import TracedTools
from onwards.trace import Tracing

log = logging.getLogger("onwards.responses")

# Without /v1 too: the Rust gateway routes both forms, and so may this one.
PATHS = frozenset({"/v1/responses", "/v1/responses/", "/responses", "/responses/"})


@dataclass
class Served:
    """What the access log says about the adapter's part of a request."""

    status: int = 500
    model_calls: int = 0
    error: str = ""
    response_id: str = ""
    bytes_out: int = 0  # response body bytes handed to the server


@dataclass
class AdapterContext:
    """Everything the adapter needs from the worker, passed by the proxy handler."""

    app: ASGIApp  # the gateway's own proxy handler, for the model steps
    plan: ResponsesPlan
    target: str
    store: ResponseStore
    metrics: ResponsesMetrics
    session: Any  # the worker's aiohttp session, for the HTTP tools
    rid_header: tuple[bytes, bytes]  # the request's x-request-id, also the prefix of its step ids
    tracing: Tracing | None = None  # the worker's trace export, when on
    span: Any = None  # the request's trace span (export on): the parent of its steps' spans
    served: Served = field(default_factory=Served)


class _ClientGone(Exception):
    pass


async def serve(ctx: AdapterContext, scope: Scope, receive: Receive, send: Send, body: bytes) -> Served:
    """Answer one `/v1/responses` request through the adapter; never raises for bad input."""
    served = ctx.served
    send = _counting(send, served)

    client_gone = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(_watch(receive, client_gone))
    try:
        try:
            request = _decode(body)
            steps, enabled = await _prepare(ctx, request)
        except ResponsesRequestError as error:
            served.status, served.error = error.status, error.message
            await _send_json(send, error.status, error.body(), ctx.rid_header)
            return served
        served.response_id = steps.response_id
        executor: ToolExecutor = HttpToolExecutor([ctx.plan.tools[name] for name in enabled], ctx.session)
        if ctx.tracing is not None and ctx.span is not None:
            executor = TracedTools(executor, ctx.tracing, ctx.span)
        model = SubRequestModelClient(ctx.app, scope, client_gone, ctx.span)
        runner = _Runner(ctx, steps, executor, model, send)
        await _until_gone(runner.run(bool(request.get("stream"))), client_gone, served)
    except _ClientGone:
        served.status, served.error = 499, "client disconnected"
    finally:
        watcher.cancel()
    return served


def _counting(send: Send, served: Served) -> Send:
    """`send` that also counts the body bytes the access log reports."""

    async def counted(message: Message) -> None:
        if message["type"] == "http.response.body":
            served.bytes_out += len(message.get("body", b""))
        await send(message)

    return counted


async def _until_gone(work: Coroutine[Any, Any, None], client_gone: asyncio.Event, served: Served) -> None:
    """Run `work`; cancel it when the client leaves, which also ends its steps' requests."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(work)
    gone = loop.create_task(client_gone.wait())
    try:
        await asyncio.wait([task, gone], return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            served.status, served.error = 499, "client disconnected"
        try:
            await task
        except asyncio.CancelledError:
            if not client_gone.is_set():
                raise
    finally:
        gone.cancel()
        if not task.done():  # we were cancelled ourselves (shutdown): take the work down with us
            task.cancel()


async def _watch(receive: Receive, client_gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            client_gone.set()
            return


def _decode(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ResponsesRequestError("Request body must be valid JSON.", code="bad_request") from None
    if not isinstance(request, dict):
        raise ResponsesRequestError("Request body must be a JSON object.", code="bad_request")
    if request.get("background"):
        raise ResponsesRequestError(
            "Background responses are not supported by this model's adapter.",
            "background",
            "unsupported_value",
        )
    return request


def enabled_server_tools(plan: ResponsesPlan, tools: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """The server-side tools a request enables (`{"type": "hosted_tool", "name": ...}`) and
    its chat tool definitions; unknown tools and client/server name collisions are refused."""
    if tools is None:
        return [], []
    if not isinstance(tools, list):
        raise ResponsesRequestError("'tools' must be a list.", "tools")
    available = ", ".join(sorted(plan.tools)) or "none"
    enabled: list[str] = []
    client: set[str] = set()
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            client.add(str(tool.get("name")))
        elif kind == "hosted_tool":
            name = tool.get("name")
            if name not in plan.tools:
                raise ResponsesRequestError(
                    f"Unknown hosted tool: '{name}'. Available tools: [{available}]",
                    f"tools[{i}].name",
                    "unknown_tool",
                )
            if name not in enabled:
                enabled.append(name)
        else:
            raise ResponsesRequestError(
                f"Tool type '{kind}' is not available for this model. Use function tools, or enable a "
                f'server-side tool with {{"type": "hosted_tool", "name": ...}}; available: [{available}]',
                f"tools[{i}].type",
                "unknown_tool",
            )
    collisions = sorted(client.intersection(enabled))
    if collisions:
        raise ResponsesRequestError(
            "Tool name collision: the following tools are provided by both the client and the server: "
            + ", ".join(collisions),
            "tools",
            "tool_name_collision",
        )
    return enabled, [plan.chat_tools[name] for name in enabled]


async def _prepare(ctx: AdapterContext, request: dict[str, Any]) -> tuple[ConversationSteps, list[str]]:
    enabled, server_tools = enabled_server_tools(ctx.plan, request.get("tools"))
    history: list[dict[str, Any]] = []
    previous = request.get("previous_response_id")
    if previous is not None:
        history = await _history(ctx.store, previous)
    chat = convert.to_chat_request(request, history, server_tools)
    instructions = request.get("instructions")
    count = 1 if isinstance(instructions, str) else 0
    if isinstance(instructions, list):
        count = len(input_to_messages(instructions, "instructions"))
    if enabled:
        # The response shows the tools the model was given: a hosted tool as its function definition.
        request = {**request, "tools": [_shown_tool(ctx.plan, t) for t in request["tools"]]}
    steps = ConversationSteps(
        request,
        chat,
        ids.response_id(),
        enabled,
        instruction_messages=count,
        request_id=ctx.rid_header[1].decode(),
    )
    return steps, enabled


def _shown_tool(plan: ResponsesPlan, tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "hosted_tool":
        return tool
    schema = plan.tools[tool["name"]].schema
    return {
        "type": "function",
        "name": schema.name,
        "description": schema.description,
        "parameters": schema.parameters,
        "strict": schema.strict,
    }


async def _history(store: ResponseStore, previous: Any) -> list[dict[str, Any]]:
    not_found = ResponsesRequestError(
        f"Previous response with id '{previous}' not found.",
        "previous_response_id",
        "previous_response_not_found",
    )
    if not valid_id(previous):
        raise not_found
    try:
        record = await store.load(previous)
    except ResponseStoreError as error:
        log.error("%s", error)
        raise ResponsesRequestError(
            "The response store is unavailable; previous_response_id cannot be resolved now.",
            "previous_response_id",
            "store_unavailable",
            status=503,
        ) from None
    if record is None:
        raise not_found
    return record.messages


class _Runner:
    """Runs the loop for one request and answers it, as JSON or as an event stream."""

    def __init__(
        self,
        ctx: AdapterContext,
        steps: ConversationSteps,
        executor: ToolExecutor,
        model: SubRequestModelClient,
        send: Send,
    ) -> None:
        self.ctx = ctx
        self.steps = steps
        self.executor = executor
        self.model = model
        self.send = send
        self.started = False

    def model_call(self, step_request_id: str, seconds: float, ok: bool) -> None:
        self.ctx.served.model_calls += 1

    def tool_call(self, name: str, seconds: float, ok: bool) -> None:
        self.ctx.metrics.tool_call(self.ctx.target, name, ok, seconds)

    async def emit(self, event: Event) -> None:
        if not self.started:
            self.started = True
            headers = [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                self.ctx.rid_header,
            ]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._send({"type": "http.response.body", "body": encode_event(event), "more_body": True})

    async def _send(self, message: Message) -> None:
        try:
            await self.send(message)
        except Exception as error:  # the server raises once the client is gone
            raise _ClientGone() from error

    async def run(self, stream: bool) -> None:
        ctx, served = self.ctx, self.ctx.served
        config = LoopConfig(max_steps=ctx.plan.max_steps)
        try:
            try:
                response = await run_response_loop(
                    self.steps,
                    self.executor,
                    self.model,
                    self.steps.response_id,
                    sink=self if stream else None,
                    config=config,
                    observer=self,
                )
            except StepLimitExceeded as limit:
                response = limit.response
            except ResponseFailed as failed:
                await self._failed(failed)
                return
            await self._store(response)
            ctx.metrics.response_finished(ctx.target, response["status"], served.model_calls)
            served.status = 200
            if stream:
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await _send_json(self.send, 200, orjson.dumps(response), ctx.rid_header)
        except _ClientGone:
            served.status, served.error = 499, "client disconnected"
        except Exception as error:  # a bug must still end the request with an answer
            log.exception("the response loop failed")
            served.status, served.error = 500, f"{type(error).__name__}: {error}"
            if self.started:
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await _send_json(self.send, 500, INTERNAL, ctx.rid_header)

    async def _failed(self, failed: ResponseFailed) -> None:
        ctx, served = self.ctx, self.ctx.served
        ctx.metrics.response_finished(ctx.target, "failed", served.model_calls)
        served.error = str(failed.error.get("message", "response failed"))
        if failed.streamed:
            served.status = 200  # the stream carried response.failed
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        status = int(failed.error.get("status") or 502)
        body = str(failed.error.get("body") or "").encode()
        if not body:
            body = error_body(served.error, "api_error", str(failed.error.get("code") or "upstream_error"))
        extra = tuple(
            (n.encode("latin-1"), v.encode("latin-1")) for n, v in failed.error.get("headers") or ()
        )
        served.status = status
        await _send_json(self.send, status, body, ctx.rid_header, extra)

    async def _store(self, response: dict[str, Any]) -> None:
        if self.steps.request.get("store") is False:
            return
        record = StoredResponse(response=response, messages=self.steps.conversation())
        try:
            await self.ctx.store.save(self.steps.response_id, record)
        except ResponseStoreError as error:
            # The answer is still good; only a later previous_response_id to it will fail.
            log.error("%s", error)


async def _send_json(
    send: Send,
    status: int,
    body: bytes,
    rid_header: tuple[bytes, bytes],
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        rid_header,
        *extra,
    ]
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
    except Exception as error:
        raise _ClientGone() from error
