"""The gateway's built-in step store: one response's chain, in memory, and the tool loop's rule.

The transition function, from the chain so far:
* nothing yet -> one model call with the converted request;
* the last model call failed -> fail the response with its error;
* the last model call asked for server-side tools not run yet -> run them (concurrently);
* those ran (or failed: the model is shown the error as the tool output) -> if the same
  model call also asked for client-side tools, complete (the client runs those and answers
  with function_call_output items); otherwise call the model again with the results;
* otherwise -> complete.
The final output is the output items of every model call, except calls to server-side tools,
which the gateway ran itself. The conversation (for previous_response_id) is the history,
the new input and every assistant and tool message of the loop.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from onwards.responses import convert, ids
from onwards.responses.protocols import (
    AppendSteps,
    ChainStep,
    Complete,
    Fail,
    NextAction,
    RecordedStep,
    StepDescriptor,
    StepKind,
    StepState,
)


class ConversationSteps:
    """A `StepStore` for one response served by the gateway (the chain lives as long as the request)."""

    def __init__(
        self,
        request: dict[str, Any],
        chat_request: dict[str, Any],
        response_id: str,
        server_tools: Collection[str],
        instruction_messages: int = 0,
        request_id: str = "",
    ) -> None:
        self.request = request
        self.chat_request = chat_request
        self.response_id = response_id
        self.server_tools = frozenset(server_tools)
        self.created_at = int(time.time())
        # The first messages of chat_request that came from `instructions`: not part of the
        # stored conversation, as the Responses API does not carry instructions over.
        self._instruction_messages = instruction_messages
        self._chain: list[ChainStep] = []
        # Step ids extend the client request's id, so the access-log lines of the steps are
        # found from the response's own line; without one they are random.
        self._step_prefix = request_id[:100]

    # -- the StepStore protocol ---------------------------------------------------------------

    async def record_step(
        self, response_id: str, descriptor: StepDescriptor, prev_step_id: str | None
    ) -> RecordedStep:
        step_id = (
            f"{self._step_prefix}.step{len(self._chain)}" if self._step_prefix else ids.step_request_id()
        )
        self._chain.append(
            ChainStep(step_id, descriptor.kind, StepState.PENDING, len(self._chain), descriptor.payload)
        )
        return RecordedStep(step_id, len(self._chain) - 1, step_id)

    async def complete_step(self, step_id: str, result: dict[str, Any]) -> None:
        self._update(step_id, state=StepState.COMPLETED, result=result)

    async def fail_step(self, step_id: str, error: dict[str, Any]) -> None:
        self._update(step_id, state=StepState.FAILED, error=error)

    async def list_chain(self, response_id: str) -> list[ChainStep]:
        return list(self._chain)

    async def next_action(self, response_id: str) -> NextAction:
        last_model = self._last_model_index()
        if last_model is None:
            return AppendSteps((StepDescriptor(StepKind.MODEL_CALL, self.chat_request),))
        step = self._chain[last_model]
        if step.state is StepState.FAILED:
            return Fail(step.error or {"message": "the model call failed"})
        calls = _tool_calls(step)
        server = [c for c in calls if c["function"]["name"] in self.server_tools]
        ran = self._chain[last_model + 1 :]
        if server and not ran:
            return AppendSteps(
                tuple(
                    StepDescriptor(
                        StepKind.TOOL_CALL,
                        {
                            "name": c["function"]["name"],
                            "call_id": c["id"],
                            "arguments": c["function"]["arguments"],
                        },
                    )
                    for c in server
                )
            )
        if server and len(server) == len(calls):
            body = {**self.chat_request, "messages": [*self.chat_request["messages"], *self._transcript()]}
            return AppendSteps((StepDescriptor(StepKind.MODEL_CALL, body),))
        return Complete()

    async def assemble_response(self, response_id: str) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        usage = None
        for step in self._chain:
            if step.kind is StepKind.MODEL_CALL and step.result is not None:
                output.extend(step.result.get("output") or ())
                usage = convert.add_usage(usage, step.result.get("usage"))
        status, incomplete = "in_progress", None
        last_model = self._last_model_index()
        if last_model is not None and self._chain[last_model].result is not None:
            finish = _finish_reason(self._chain[last_model])
            status, incomplete = convert.response_status(finish)
        return convert.build_response(
            self.request,
            self.response_id,
            created_at=self.created_at,
            output=output,
            status=status,
            usage=usage,
            incomplete_details=incomplete,
        )

    # -- for the gateway ----------------------------------------------------------------------

    def conversation(self) -> list[dict[str, Any]]:
        """The messages to store for a later previous_response_id (instructions left out)."""
        return [*self.chat_request["messages"][self._instruction_messages :], *self._transcript()]

    def _transcript(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for step in self._chain:
            if step.kind is StepKind.MODEL_CALL and step.result is not None:
                message = _message(step)
                kept = {"role": "assistant", "content": message.get("content")}
                if message.get("tool_calls"):
                    kept["tool_calls"] = message["tool_calls"]
                messages.append(kept)
            elif step.kind is StepKind.TOOL_CALL and step.state is not StepState.PENDING:
                if step.result is not None:
                    content = str(step.result.get("output", ""))
                else:
                    content = f"Error: {(step.error or {}).get('message', 'the tool failed')}"
                messages.append(
                    {"role": "tool", "tool_call_id": step.payload.get("call_id", ""), "content": content}
                )
        return messages

    def _last_model_index(self) -> int | None:
        for index in range(len(self._chain) - 1, -1, -1):
            if self._chain[index].kind is StepKind.MODEL_CALL:
                return index
        return None

    def _update(self, step_id: str, **changes: Any) -> None:
        for index, step in enumerate(self._chain):
            if step.id == step_id:
                self._chain[index] = replace(step, **changes)
                return
        raise KeyError(step_id)


def _message(step: ChainStep) -> dict[str, Any]:
    choices = ((step.result or {}).get("completion") or {}).get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    return message if isinstance(message, dict) else {}


def _finish_reason(step: ChainStep) -> Any:
    choices = ((step.result or {}).get("completion") or {}).get("choices") or [{}]
    return choices[0].get("finish_reason") if isinstance(choices[0], dict) else None


def _tool_calls(step: ChainStep) -> list[dict[str, Any]]:
    calls = _message(step).get("tool_calls") or []
    return [c for c in calls if isinstance(c, dict) and isinstance(c.get("function"), dict)]
