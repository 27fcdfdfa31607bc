"""A host application that embeds the Onwards response loop with its own step store.

The application keeps every step of every response as a row in SQLite (so a crashed worker's
half-finished response can be resumed from its last recorded step), runs its tools as plain
Python functions, and calls one Chat Completions URL. Onwards supplies only the loop:
`run_response_loop` asks this store what to do next, runs the steps, and records results.

Run it against any Chat Completions endpoint:

    python examples/responses_host_store.py http://127.0.0.1:8000/v1/chat/completions my-model \
        "What time is it in Paris?"
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from onwards.responses import convert
from onwards.responses.http import HttpModelClient
from onwards.responses.loop import (
    AppendSteps,
    ChainStep,
    Complete,
    Fail,
    NextAction,
    RecordedStep,
    StepDescriptor,
    StepKind,
    StepState,
    ToolError,
    ToolSchema,
    run_response_loop,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, request TEXT NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    id TEXT PRIMARY KEY, response_id TEXT NOT NULL, sequence INTEGER NOT NULL, prev_step_id TEXT,
    kind TEXT NOT NULL, state TEXT NOT NULL, payload TEXT NOT NULL, result TEXT, error TEXT,
    request_id TEXT NOT NULL, UNIQUE (response_id, sequence)
);
"""


class SqliteStepStore:
    """A StepStore on SQLite. Its rule: call the model; run any tools it asks for; call it again
    with the results; stop when it answers without tool calls (the loop's step limit bounds it)."""

    def __init__(self, db: sqlite3.Connection, tools: Sequence[ToolSchema]) -> None:
        self.db = db
        self.db.executescript(SCHEMA)
        self.tools = [t.chat_tool() for t in tools]

    def create_response(self, request: dict[str, Any]) -> str:
        response_id = f"resp_{uuid.uuid4().hex}"
        with self.db:
            self.db.execute(
                "INSERT INTO responses VALUES (?, ?, ?)", (response_id, json.dumps(request), int(time.time()))
            )
        return response_id

    def _request(self, response_id: str) -> tuple[dict[str, Any], int]:
        row = self.db.execute(
            "SELECT request, created_at FROM responses WHERE id = ?", (response_id,)
        ).fetchone()
        return json.loads(row[0]), row[1]

    async def record_step(
        self, response_id: str, descriptor: StepDescriptor, prev_step_id: str | None
    ) -> RecordedStep:
        step_id, request_id = f"step_{uuid.uuid4().hex}", f"req_{uuid.uuid4().hex}"
        with self.db:
            (sequence,) = self.db.execute(
                "SELECT COALESCE(MAX(sequence) + 1, 0) FROM steps WHERE response_id = ?", (response_id,)
            ).fetchone()
            self.db.execute(
                "INSERT INTO steps VALUES (?, ?, ?, ?, ?, 'pending', ?, NULL, NULL, ?)",
                (
                    step_id,
                    response_id,
                    sequence,
                    prev_step_id,
                    descriptor.kind.value,
                    json.dumps(descriptor.payload),
                    request_id,
                ),
            )
        return RecordedStep(step_id, sequence, request_id)

    async def complete_step(self, step_id: str, result: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "UPDATE steps SET state = 'completed', result = ? WHERE id = ?", (json.dumps(result), step_id)
            )

    async def fail_step(self, step_id: str, error: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "UPDATE steps SET state = 'failed', error = ? WHERE id = ?", (json.dumps(error), step_id)
            )

    async def list_chain(self, response_id: str) -> list[ChainStep]:
        rows = self.db.execute(
            "SELECT id, kind, state, sequence, payload, result, error FROM steps "
            "WHERE response_id = ? ORDER BY sequence",
            (response_id,),
        ).fetchall()
        return [
            ChainStep(
                id=r[0],
                kind=StepKind(r[1]),
                state=StepState(r[2]),
                sequence=r[3],
                payload=json.loads(r[4]),
                result=json.loads(r[5]) if r[5] else None,
                error=json.loads(r[6]) if r[6] else None,
            )
            for r in rows
        ]

    async def next_action(self, response_id: str) -> NextAction:
        # A pending step is one a crashed worker never finished: its work is simply done again.
        chain = [s for s in await self.list_chain(response_id) if s.state is not StepState.PENDING]
        request, _ = self._request(response_id)
        messages = convert.to_chat_request(request)["messages"]
        if not chain:
            return AppendSteps(
                (
                    StepDescriptor(
                        StepKind.MODEL_CALL, {**convert.to_chat_request(request), "tools": self.tools}
                    ),
                )
            )
        last = chain[-1]
        if last.state is StepState.FAILED and last.kind is StepKind.MODEL_CALL:
            return Fail(last.error or {"message": "model call failed"})
        if last.kind is StepKind.MODEL_CALL:
            calls = (last.result or {})["completion"]["choices"][0]["message"].get("tool_calls") or []
            if not calls:
                return Complete()
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
                    for c in calls
                )
            )
        # The last steps were tool calls: replay the whole chain as a conversation and ask again.
        for step in chain:
            if step.kind is StepKind.MODEL_CALL:
                message = (step.result or {})["completion"]["choices"][0]["message"]
                messages.append(
                    {
                        "role": "assistant",
                        "content": message.get("content"),
                        "tool_calls": message.get("tool_calls"),
                    }
                )
            else:
                output = (step.result or {}).get("output") or f"Error: {(step.error or {}).get('message')}"
                messages.append({"role": "tool", "tool_call_id": step.payload["call_id"], "content": output})
        body = {**convert.to_chat_request(request), "messages": messages, "tools": self.tools}
        return AppendSteps((StepDescriptor(StepKind.MODEL_CALL, body),))

    async def assemble_response(self, response_id: str) -> dict[str, Any]:
        request, created_at = self._request(response_id)
        output: list[dict[str, Any]] = []
        usage = None
        status = "in_progress"
        for step in await self.list_chain(response_id):
            if step.kind is StepKind.MODEL_CALL and step.result:
                # Only the final answer is shown: this application's tools are its own business.
                output = [i for i in step.result["output"] if i["type"] != "function_call"]
                usage = convert.add_usage(usage, step.result.get("usage"))
                status = "completed"
        return convert.build_response(
            request, response_id, created_at=created_at, output=output, status=status, usage=usage
        )


class PythonTools:
    """A ToolExecutor over plain Python functions."""

    def __init__(self, functions: dict[str, tuple[ToolSchema, Callable[..., Any]]]) -> None:
        self.functions = functions

    def tools(self) -> Sequence[ToolSchema]:
        return [schema for schema, _ in self.functions.values()]

    async def execute(self, name: str, call_id: str, arguments: dict[str, Any]) -> Any:
        if name not in self.functions:
            raise ToolError(f"unknown tool {name}")
        return self.functions[name][1](**arguments)


def clock(city: str = "UTC") -> dict[str, str]:
    return {"city": city, "time": time.strftime("%H:%M", time.gmtime())}


TOOLS = {
    "clock": (
        ToolSchema(
            "clock",
            "The current time in a city",
            {"type": "object", "properties": {"city": {"type": "string"}}},
        ),
        clock,
    )
}


async def answer(url: str, model: str, question: str, db: sqlite3.Connection) -> dict[str, Any]:
    executor = PythonTools(TOOLS)
    store = SqliteStepStore(db, executor.tools())
    response_id = store.create_response({"model": model, "input": question})
    async with aiohttp.ClientSession() as session:
        return await run_response_loop(store, executor, HttpModelClient(session, url), response_id)


if __name__ == "__main__":
    url, model, question = sys.argv[1:4]
    result = asyncio.run(answer(url, model, question, sqlite3.connect("responses.db")))
    print(json.dumps(result, indent=2))
