"""The multi-step response loop (its interfaces are in onwards/responses/protocols.py).

`run_response_loop` drives one response: it asks the step store what to do next, runs the
steps it is given (model calls through a `ModelClient`, server-side tool calls through a
`ToolExecutor`, siblings concurrently), records their results in the store, and repeats
until the store says the response is complete or failed, or the step limit is reached. The
loop owns no state of its own: a host application that keeps steps in its database plugs in
its own `StepStore` and gets the same loop the gateway uses with its built-in store.

Streaming: with an `EventSink`, model calls stream and the Responses SSE events are
forwarded to the sink as the upstream produces them; `response.created` is sent only once
the first model call has answered, so a call refused before any output (a 429, say) can
still become a plain HTTP error.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from onwards.responses import convert
from onwards.responses.protocols import (
    DEFAULT_MAX_STEPS,
    STEP_REQUEST_ID_HEADER,
    AppendSteps,
    ChainStep,
    Complete,
    EventSink,
    Fail,
    LoopConfig,
    LoopObserver,
    ModelCallError,
    ModelClient,
    NextAction,
    RecordedStep,
    ResponseFailed,
    StepDescriptor,
    StepKind,
    StepLimitExceeded,
    StepState,
    StepStore,
    ToolError,
    ToolExecutor,
    ToolSchema,
)
from onwards.responses.stream import ChatStreamTranslator, Event, Sequencer, SSEParser, lifecycle_event

__all__ = [
    "DEFAULT_MAX_STEPS",
    "STEP_REQUEST_ID_HEADER",
    "AppendSteps",
    "ChainStep",
    "Complete",
    "EventSink",
    "Fail",
    "LoopConfig",
    "LoopObserver",
    "ModelCallError",
    "ModelClient",
    "NextAction",
    "RecordedStep",
    "ResponseFailed",
    "StepDescriptor",
    "StepKind",
    "StepLimitExceeded",
    "StepState",
    "StepStore",
    "ToolError",
    "ToolExecutor",
    "ToolSchema",
    "run_response_loop",
]

_DEFAULT_CONFIG = LoopConfig()


async def run_response_loop(
    store: StepStore,
    executor: ToolExecutor,
    model: ModelClient,
    response_id: str,
    *,
    sink: EventSink | None = None,
    config: LoopConfig = _DEFAULT_CONFIG,
    observer: LoopObserver | None = None,
) -> dict[str, Any]:
    """Run the response to its end and return the final Response object.

    Raises ResponseFailed when the store fails the response and StepLimitExceeded when it
    asks for more model calls than `config.max_steps`; with a sink, the matching terminal
    event (`response.failed` / `response.incomplete`) has been emitted by then.
    """
    run = _Run(store, executor, model, response_id, sink, observer)
    chain = await store.list_chain(response_id)  # resume onto an existing tail
    prev = chain[-1].id if chain else None
    model_calls = sum(1 for s in chain if s.kind is StepKind.MODEL_CALL)
    run.seq.next_output_index = sum(len((s.result or {}).get("output") or ()) for s in chain)
    while True:
        action = await store.next_action(response_id)
        if isinstance(action, Complete):
            response = await store.assemble_response(response_id)
            await run.terminal("response.completed", response)
            return response
        if isinstance(action, Fail):
            response = await store.assemble_response(response_id)
            response.update(status="failed", error=_public_error(action.error))
            streamed = run.started
            await run.terminal("response.failed", response)
            raise ResponseFailed(response, action.error, streamed)
        if not action.steps:
            raise ValueError("the step store asked for an empty set of steps")
        model_calls += sum(1 for d in action.steps if d.kind is StepKind.MODEL_CALL)
        if model_calls > config.max_steps:
            response = await store.assemble_response(response_id)
            response.update(status="incomplete", incomplete_details={"reason": "max_steps"})
            await run.terminal("response.incomplete", response)
            raise StepLimitExceeded(response, config.max_steps)
        recorded = []
        for descriptor in action.steps:  # recorded in order, so the chain reads the same every time
            step = await store.record_step(response_id, descriptor, prev)
            recorded.append(step)
            prev = step.id
        await asyncio.gather(*(run.step(d, r) for d, r in zip(action.steps, recorded, strict=True)))


def _public_error(error: dict[str, Any]) -> dict[str, Any]:
    return {"code": error.get("code") or "server_error", "message": error.get("message", "")}


class _Run:
    """One run of the loop: its sequencer and whether the client has seen the response start."""

    def __init__(
        self,
        store: StepStore,
        executor: ToolExecutor,
        model: ModelClient,
        response_id: str,
        sink: EventSink | None,
        observer: LoopObserver | None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.model = model
        self.response_id = response_id
        self.sink = sink
        self.observer = observer
        self.seq = Sequencer()
        self.started = False
        self.hidden = frozenset(t.name for t in executor.tools())
        self._start_lock = asyncio.Lock()

    async def emit(self, events: list[Event]) -> None:
        if self.sink is None or not events:
            return
        await self.start()
        for event in events:
            await self.sink.emit(event)

    async def start(self) -> None:
        if self.sink is None or self.started:
            return
        async with self._start_lock:
            if self.started:
                return
            self.started = True
            response = await self.store.assemble_response(self.response_id)
            response.update(status="in_progress", output=[], usage=None, completed_at=None)
            await self.sink.emit(lifecycle_event(self.seq, "response.created", response))
            await self.sink.emit(lifecycle_event(self.seq, "response.in_progress", response))

    async def terminal(self, kind: str, response: dict[str, Any]) -> None:
        if self.sink is None:
            return
        if kind == "response.failed" and not self.started:
            return  # nothing was sent: the caller can still answer with a plain HTTP error
        await self.start()
        await self.sink.emit(lifecycle_event(self.seq, kind, response))

    async def step(self, descriptor: StepDescriptor, recorded: RecordedStep) -> None:
        if descriptor.kind is StepKind.MODEL_CALL:
            await self._model_step(descriptor.payload, recorded)
        else:
            await self._tool_step(descriptor.payload, recorded)

    async def _model_step(self, body: dict[str, Any], recorded: RecordedStep) -> None:
        began = time.monotonic()
        try:
            if self.sink is None:
                body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
                completion = await self.model.complete(body, recorded.request_id)
                items = convert.completion_to_items(completion, self.hidden)
            else:
                completion, items = await self._stream(body, recorded.request_id)
        except ModelCallError as error:
            self._observe_model(recorded, began, False)
            await self.store.fail_step(recorded.id, error.as_error())
            return
        self._observe_model(recorded, began, True)
        usage = convert.chat_usage_to_response(completion.get("usage"))
        await self.store.complete_step(
            recorded.id, {"completion": completion, "output": items, "usage": usage}
        )

    async def _stream(
        self, body: dict[str, Any], request_id: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        parser = SSEParser()
        translator = ChatStreamTranslator(self.seq, self.hidden)
        async for chunk in self.model.stream(body, request_id):
            await self.start()  # the upstream answered: the response has begun
            for data in parser.feed(chunk):
                await self.emit(translator.feed_data(data))
        for data in parser.close():
            await self.emit(translator.feed_data(data))
        if translator.error is not None:
            # An error inside a 200 stream: what was streamed stays streamed, the step fails.
            message = str(translator.error.get("message") or "the upstream stream reported an error")
            raise ModelCallError(message, code="upstream_error")
        await self.emit(translator.finish())
        return translator.completion(), translator.items

    def _observe_model(self, recorded: RecordedStep, began: float, ok: bool) -> None:
        if self.observer is not None:
            self.observer.model_call(recorded.request_id, time.monotonic() - began, ok)

    async def _tool_step(self, payload: dict[str, Any], recorded: RecordedStep) -> None:
        name = str(payload.get("name", ""))
        began = time.monotonic()
        try:
            arguments = orjson.loads(payload.get("arguments") or "{}")
            if not isinstance(arguments, dict):
                raise ToolError("tool arguments must be a JSON object")
            result = await self.executor.execute(name, str(payload.get("call_id", "")), arguments)
            output = result if isinstance(result, str) else orjson.dumps(result).decode()
        except orjson.JSONDecodeError:
            error: dict[str, Any] = {
                "message": "the tool arguments are not valid JSON",
                "code": "invalid_arguments",
            }
        except ToolError as failure:
            error = {"message": str(failure), "code": "tool_error"}
        except Exception as failure:  # a host executor's bug must not take the response down with it
            error = {"message": f"{type(failure).__name__}: {failure}", "code": "tool_error"}
        else:
            if self.observer is not None:
                self.observer.tool_call(name, time.monotonic() - began, True)
            await self.store.complete_step(recorded.id, {"output": output})
            return
        if self.observer is not None:
            self.observer.tool_call(name, time.monotonic() - began, False)
        await self.store.fail_step(recorded.id, error)
