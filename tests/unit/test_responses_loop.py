"""run_response_loop over the built-in step store, the HTTP tool executor and the HTTP model
client, against a scripted Chat-only upstream on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from onwards.responses import convert
from onwards.responses.http import TOOL_CALL_ID_HEADER, HttpModelClient, HttpTool, HttpToolExecutor
from onwards.responses.loop import (
    STEP_REQUEST_ID_HEADER,
    LoopConfig,
    ResponseFailed,
    StepLimitExceeded,
    ToolSchema,
    run_response_loop,
)
from onwards.responses.steps import ConversationSteps
from tests.support.chat_script import ChatScript

EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ChatScript]:
    with ChatScript() as script:
        yield script


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)


class Observer:
    def __init__(self) -> None:
        self.models: list[tuple[str, bool]] = []
        self.tools: list[tuple[str, bool]] = []

    def model_call(self, step_request_id: str, seconds: float, ok: bool) -> None:
        self.models.append((step_request_id, ok))

    def tool_call(self, name: str, seconds: float, ok: bool) -> None:
        assert seconds >= 0
        self.tools.append((name, ok))


def _setup(
    upstream: ChatScript,
    session: aiohttp.ClientSession,
    text: str,
    server: tuple[str, ...] = ("lookup", "broken"),
) -> tuple[ConversationSteps, HttpToolExecutor, HttpModelClient]:
    tools = [
        HttpTool(ToolSchema(name, f"the {name} tool"), f"http://127.0.0.1:{upstream.port}/tools/{name}", 5.0)
        for name in server
    ]
    executor = HttpToolExecutor(tools, session)
    request = {"model": "m", "input": text, "instructions": "be kind"}
    chat = convert.to_chat_request(request, (), [t.chat_tool() for t in executor.tools()])
    steps = ConversationSteps(
        request, chat, "resp_test", [t.name for t in executor.tools()], instruction_messages=1
    )
    model = HttpModelClient(session, f"{upstream.url}/chat/completions", api_key="sk-up")
    return steps, executor, model


def _texts(response: dict[str, Any]) -> list[str]:
    return [p["text"] for item in response["output"] if item["type"] == "message" for p in item["content"]]


async def test_plain_answer_is_one_model_call(upstream: ChatScript, session: aiohttp.ClientSession) -> None:
    before = len(upstream.chat_requests())
    steps, executor, model = _setup(upstream, session, "hi")
    response = await run_response_loop(steps, executor, model, "resp_test")
    Response.model_validate(response)
    assert response["status"] == "completed"
    assert _texts(response) == ["echo: hi (messages=2)"]
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 2
    sent = upstream.chat_requests()[before:]
    assert len(sent) == 1
    assert sent[0]["headers"][STEP_REQUEST_ID_HEADER].startswith("step_")
    assert sent[0]["headers"]["Authorization"] == "Bearer sk-up"


async def test_server_tool_runs_in_the_loop(upstream: ChatScript, session: aiohttp.ClientSession) -> None:
    before, tools_before = len(upstream.chat_requests()), len(upstream.tool_requests)
    steps, executor, model = _setup(upstream, session, 'call lookup {"q": 1}')
    observer = Observer()
    response = await run_response_loop(steps, executor, model, "resp_test", observer=observer)
    assert _texts(response) == ['tool said: {"tool":"lookup","args":{"q":1}}']
    assert [i["type"] for i in response["output"]] == ["message"]  # the server call is not the client's
    sent = upstream.chat_requests()[before:]
    # The script reports 10 prompt tokens per message and 5 completion tokens: both model calls.
    assert response["usage"]["total_tokens"] == sum(10 * len(s["body"]["messages"]) + 5 for s in sent)
    assert len(sent) == 2
    assert len(sent) == 2
    assert sent[0]["headers"][STEP_REQUEST_ID_HEADER] != sent[1]["headers"][STEP_REQUEST_ID_HEADER]
    assert [t["function"]["name"] for t in sent[0]["body"]["tools"]] == ["lookup", "broken"]
    tool_request = upstream.tool_requests[tools_before]
    assert tool_request["body"] == {"q": 1}
    assert tool_request["headers"][TOOL_CALL_ID_HEADER].startswith("call_")
    assert [m["role"] for m in sent[1]["body"]["messages"]] == ["system", "user", "assistant", "tool"]
    assert observer.tools == [("lookup", True)]
    assert [ok for _, ok in observer.models] == [True, True]
    conversation = steps.conversation()
    assert [m["role"] for m in conversation] == ["user", "assistant", "tool", "assistant"]


async def test_client_tool_comes_back_as_a_function_call(
    upstream: ChatScript, session: aiohttp.ClientSession
) -> None:
    steps, executor, model = _setup(upstream, session, 'call get_weather {"city": "x"}')
    response = await run_response_loop(steps, executor, model, "resp_test")
    [call] = response["output"]
    assert call["type"] == "function_call"
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "x"})
    assert response["status"] == "completed"


async def test_mixed_calls_run_the_server_one_and_return_the_client_one(
    upstream: ChatScript, session: aiohttp.ClientSession
) -> None:
    before = len(upstream.chat_requests())
    steps, executor, model = _setup(upstream, session, "call lookup {} and get_weather {}")
    response = await run_response_loop(steps, executor, model, "resp_test")
    assert [i.get("name") for i in response["output"]] == ["get_weather"]
    assert len(upstream.chat_requests()) - before == 1
    roles = [(m["role"], m.get("tool_call_id")) for m in steps.conversation()]
    assert roles[-1][0] == "tool"  # the server tool's result waits in the conversation


async def test_a_failing_tool_is_shown_to_the_model(
    upstream: ChatScript, session: aiohttp.ClientSession
) -> None:
    steps, executor, model = _setup(upstream, session, "call broken {}")
    observer = Observer()
    response = await run_response_loop(steps, executor, model, "resp_test", observer=observer)
    assert _texts(response) == ["tool said: Error: tool broken answered HTTP 500: tool exploded"]
    assert observer.tools == [("broken", False)]


async def test_the_step_limit_stops_a_tool_loop(upstream: ChatScript, session: aiohttp.ClientSession) -> None:
    before = len(upstream.chat_requests())
    steps, executor, model = _setup(upstream, session, "loop lookup")
    sink = Sink()
    with pytest.raises(StepLimitExceeded) as caught:
        await run_response_loop(
            steps, executor, model, "resp_test", config=LoopConfig(max_steps=3), sink=sink
        )
    assert len(upstream.chat_requests()) - before == 3
    assert caught.value.response["status"] == "incomplete"
    assert caught.value.response["incomplete_details"] == {"reason": "max_steps"}
    assert sink.events[-1]["type"] == "response.incomplete"


async def test_a_failed_model_call_fails_the_response(
    upstream: ChatScript, session: aiohttp.ClientSession
) -> None:
    steps, executor, _ = _setup(upstream, session, "hi")
    model = HttpModelClient(session, f"http://127.0.0.1:{upstream.port}/missing")
    sink = Sink()
    with pytest.raises(ResponseFailed) as caught:
        await run_response_loop(steps, executor, model, "resp_test", sink=sink)
    assert caught.value.error["status"] == 404
    assert caught.value.streamed is False
    assert sink.events == []  # nothing started: the caller can still answer with a plain 404


async def test_streaming_forwards_deltas_and_hides_server_calls(
    upstream: ChatScript, session: aiohttp.ClientSession
) -> None:
    steps, executor, model = _setup(upstream, session, 'call lookup {"q": 2}')
    sink = Sink()
    response = await run_response_loop(steps, executor, model, "resp_test", sink=sink)
    types = [e["type"] for e in sink.events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.function_call_arguments.delta" not in types  # the lookup call is the gateway's
    for event in sink.events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in sink.events] == list(range(len(sink.events)))
    deltas = "".join(e["delta"] for e in sink.events if e["type"] == "response.output_text.delta")
    assert deltas == _texts(response)[0] == 'tool said: {"tool":"lookup","args":{"q":2}}'
    done = [e["item"] for e in sink.events if e["type"] == "response.output_item.done"]
    assert done == response["output"] == sink.events[-1]["response"]["output"]
    assert sink.events[0]["response"]["status"] == "in_progress"


async def test_streaming_client_call_streams_its_arguments(
    upstream: ChatScript, session: aiohttp.ClientSession
) -> None:
    steps, executor, model = _setup(upstream, session, 'call get_weather {"city": "paris"}')
    sink = Sink()
    response = await run_response_loop(steps, executor, model, "resp_test", sink=sink)
    args = "".join(e["delta"] for e in sink.events if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "paris"}
    assert response["output"][0]["arguments"] == args
