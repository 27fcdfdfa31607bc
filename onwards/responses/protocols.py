"""The interfaces of the response loop: what a step is, and what the loop runs over.

A host application implements `StepStore` (where steps live and what comes next), and may
bring its own `ToolExecutor`, `ModelClient` and `EventSink`; `onwards.responses.loop`
drives them. Everything here is types: no behaviour beyond small helpers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from onwards.responses.stream import Event

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
