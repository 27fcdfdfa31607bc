"""The host-application example: its own SQLite step store plugged into run_response_loop."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest

from onwards.responses.http import HttpModelClient
from onwards.responses.loop import STEP_REQUEST_ID_HEADER, StepDescriptor, StepKind, run_response_loop
from tests.support.chat_script import ChatScript

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "responses_host_store.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("responses_host_store", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def upstream() -> Iterator[ChatScript]:
    with ChatScript() as script:
        yield script


async def test_host_store_runs_a_tool_and_keeps_every_step(example: ModuleType, upstream: ChatScript) -> None:
    db = sqlite3.connect(":memory:")
    url = f"{upstream.url}/chat/completions"
    response = await example.answer(url, "m", 'call clock {"city": "Paris"}', db)
    [message] = response["output"]
    said = message["content"][0]["text"]
    assert said.startswith("tool said: ")
    assert json.loads(said.removeprefix("tool said: "))["city"] == "Paris"
    assert response["usage"]["total_tokens"] == (10 + 5) + (30 + 5)  # one message, then three
    rows = db.execute("SELECT kind, state, request_id FROM steps ORDER BY sequence").fetchall()
    assert [(kind, state) for kind, state, _ in rows] == [
        ("model_call", "completed"),
        ("tool_call", "completed"),
        ("model_call", "completed"),
    ]
    sent = [r["headers"][STEP_REQUEST_ID_HEADER] for r in upstream.chat_requests()]
    assert sent == [rows[0][2], rows[2][2]]  # each model call carried its own step's request id


async def test_host_store_plain_answer(example: ModuleType, upstream: ChatScript) -> None:
    db = sqlite3.connect(":memory:")
    response = await example.answer(f"{upstream.url}/chat/completions", "m", "hello", db)
    assert response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "echo: hello (messages=1)"


async def test_the_loop_resumes_a_half_done_response_from_its_last_step(
    example: ModuleType, upstream: ChatScript
) -> None:
    # A worker recorded the first model call and the tool call, then died; another picks it up.
    db = sqlite3.connect(":memory:")
    executor = example.PythonTools(example.TOOLS)
    store = example.SqliteStepStore(db, executor.tools())
    response_id = store.create_response({"model": "m", "input": "what time is it?"})
    call = {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
    completion = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]
    }
    first = await store.record_step(response_id, StepDescriptor(StepKind.MODEL_CALL, {}), None)
    await store.complete_step(first.id, {"completion": completion, "output": [], "usage": None})
    tool = await store.record_step(
        response_id,
        StepDescriptor(StepKind.TOOL_CALL, {"name": "clock", "call_id": "call_1", "arguments": "{}"}),
        first.id,
    )
    await store.complete_step(tool.id, {"output": '{"city": "UTC", "time": "12:00"}'})

    before = len(upstream.chat_requests())
    async with aiohttp.ClientSession() as session:
        model = HttpModelClient(session, f"{upstream.url}/chat/completions")
        response = await run_response_loop(store, executor, model, response_id)
    assert response["output"][0]["content"][0]["text"] == 'tool said: {"city": "UTC", "time": "12:00"}'
    assert len(upstream.chat_requests()) - before == 1  # only the missing model call was made
    rows = db.execute("SELECT sequence, prev_step_id, kind FROM steps ORDER BY sequence").fetchall()
    assert rows[-1] == (2, tool.id, "model_call")  # chained onto the tail it found
