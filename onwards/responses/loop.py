"""The multi-step response loop and the interfaces it runs over.

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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import orjson

from onwards.responses import convert
from onwards.responses.stream import ChatStreamTranslator, Event, Sequencer, SSEParser, lifecycle_event

# The header that carries a step's own request id on its upstream model call, so upstream
# logs and analytics can tell the calls of one response apart.
STEP_REQUEST_ID_HEADER = "x-onwards-step-request-id"
DEFAULT_MAX_STEPS = 10


class StepKind(StrEnum):
    MODEL_CALL = "model_call"
    TOOL_CALL = "tool_call"


class StepState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepDescriptor:
    """What to run: a model call (payload = the chat request body) or a tool call
    (payload = {"name", "call_id", "arguments"} with arguments a JSON string)."""

    kind: StepKind
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordedStep:
    id: str
    sequence: int
    request_id: str  # sent upstream as STEP_REQUEST_ID_HEADER


@dataclass(frozen=True, slots=True)
class ChainStep:
    id: str
    kind: StepKind
    state: StepState
    sequence: int
    payload: dict[str, Any]
    result: dict[str, Any] | None = None  # a completed step's output
    error: dict[str, Any] | None = None  # a failed step's error


@dataclass(frozen=True, slots=True)
class AppendSteps:
    steps: tuple[StepDescriptor, ...]


@dataclass(frozen=True, slots=True)
class Complete:
    pass


@dataclass(frozen=True, slots=True)
class Fail:
    error: dict[str, Any]


NextAction = AppendSteps | Complete | Fail


class StepStore(Protocol):
    """Keeps the steps of responses and decides, from the chain so far, what happens next.

    A model step's result is {"completion": chat completion, "output": Responses output items
    of that call, "usage": Responses usage or None}; a tool step's result is {"output": str}.
    Errors are {"message", "code"?, "status"?, "body"?}.
    """

    async def record_step(
        self, response_id: str, descriptor: StepDescriptor, prev_step_id: str | None
    ) -> RecordedStep:
        """Persist a new pending step after `prev_step_id`."""
        ...

    async def complete_step(self, step_id: str, result: dict[str, Any]) -> None: ...

    async def fail_step(self, step_id: str, error: dict[str, Any]) -> None: ...

    async def list_chain(self, response_id: str) -> list[ChainStep]:
        """Every step of the response, in sequence order."""
        ...

    async def next_action(self, response_id: str) -> NextAction:
        """The transition function: append steps, complete, or fail."""
        ...

    async def assemble_response(self, response_id: str) -> dict[str, Any]:
        """The Response object for the chain as it stands."""
        ...


@dataclass(frozen=True, slots=True)
class ToolSchema:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False

    def chat_tool(self) -> dict[str, Any]:
        fn: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }
        if self.strict:
            fn["strict"] = True
        return {"type": "function", "function": fn}


class ToolError(Exception):
    """A tool call that failed; the message is shown to the model as the tool's output."""


class ToolExecutor(Protocol):
    def tools(self) -> Sequence[ToolSchema]:
        """The server-side tools this executor runs; calls to other names go back to the client."""
        ...

    async def execute(self, name: str, call_id: str, arguments: dict[str, Any]) -> Any:
        """Run one call; return a string or anything JSON-serialisable, or raise ToolError."""
        ...


class ModelCallError(Exception):
    """A model call that failed; `status` and `body` are what the client should see."""

    def __init__(
        self,
        message: str,
        status: int = 502,
        body: bytes = b"",
        code: str = "upstream_error",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        self.code = code
        self.headers = headers  # response headers worth passing on, such as retry-after

    def as_error(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "code": self.code,
            "status": self.status,
            "body": self.body.decode(errors="replace"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
        }


class ModelClient(Protocol):
    async def complete(self, body: dict[str, Any], step_request_id: str) -> dict[str, Any]:
        """A non-streaming chat completion; raise ModelCallError on failure."""
        ...

    def stream(self, body: dict[str, Any], step_request_id: str) -> AsyncIterator[bytes]:
        """The raw SSE bytes of a streaming chat completion; raise ModelCallError on failure."""
        ...


class EventSink(Protocol):
    async def emit(self, event: Event) -> None: ...


class LoopObserver(Protocol):
    """Told about every step, for metrics and logs."""

    def model_call(self, step_request_id: str, seconds: float, ok: bool) -> None: ...

    def tool_call(self, name: str, seconds: float, ok: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class LoopConfig:
    max_steps: int = DEFAULT_MAX_STEPS  # model calls per response


class ResponseFailed(Exception):
    """The store failed the response; `response` is the failed Response object."""

    def __init__(self, response: dict[str, Any], error: dict[str, Any], streamed: bool):
        super().__init__(error.get("message", "response failed"))
        self.response = response
        self.error = error
        self.streamed = streamed  # whether events already reached the sink


class StepLimitExceeded(Exception):
    """More model calls were asked for than `max_steps`; `response` is the incomplete Response."""

    def __init__(self, response: dict[str, Any], max_steps: int):
        super().__init__(f"the response needed more than {max_steps} model calls")
        self.response = response


async def run_response_loop(
    store: StepStore,
    executor: ToolExecutor,
    model: ModelClient,
    response_id: str,
    *,
    sink: EventSink | None = None,
    config: LoopConfig = LoopConfig(),
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
