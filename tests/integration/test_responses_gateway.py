"""`/v1/responses` through real gateway processes with the official `openai` SDK, against a
Chat-Completions-only upstream (its `/responses` is a 404, so every answer here went through
the adapter): plain, streaming, function tools, a server-side HTTP tool, the step limit,
previous_response_id across two gateway instances sharing Redis, per-step limits, token
accounting and metrics."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from onwards.responses.loop import STEP_REQUEST_ID_HEADER
from tests.support.chat_script import ChatScript
from tests.support.processes import GatewayProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.redis]

TOKEN = "sk-responses-test"
LOOKUP = {
    "name": "lookup",
    "description": "Look a thing up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    "timeout_secs": 10,
    "headers": {"X-Tool-Key": "${RESPONSES_TEST_TOOL_KEY}"},
}
METERED_BURST = 100_000
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ChatScript]:
    with ChatScript() as script:
        yield script


@pytest.fixture(scope="module")
def gateways(
    upstream: ChatScript, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess, str, str]]:
    from tests.conftest import DEFAULT_REDIS_URL
    from tests.support.processes import redis_available

    url = DEFAULT_REDIS_URL
    if not redis_available(url):
        pytest.skip(f"no Redis answered PING at {url}")
    prefix = f"onwards-test-responses-{id(upstream)}"
    tool = {**LOOKUP, "url": f"http://127.0.0.1:{upstream.port}/tools/lookup"}
    adapter = {"adapter": True, "max_steps": 3, "tools": [tool]}
    config = {
        "auth": {"global_keys": [TOKEN]},
        "targets": {
            "chat-model": {"url": upstream.url, "open_responses": adapter},
            "pooled": {
                "providers": [{"url": upstream.url, "open_responses": {"adapter": True}}],
                "open_responses": {"tools": [tool]},
                "rate_limit": {"requests_per_second": 0.001, "burst_size": 3},
            },
            "passthrough": {"url": upstream.url},
            "single": {
                "url": upstream.url,
                "open_responses": {"adapter": True},
                "concurrency_limit": {"max_concurrent_requests": 1},
            },
            # A token bucket that refills one token a minute: its level after a test is exact.
            "metered": {
                "url": upstream.url,
                "open_responses": {"adapter": True, "tools": [tool]},
                "token_limit": {"tokens_per_minute": 1, "burst_tokens": METERED_BURST},
            },
            "tight": {
                "url": upstream.url,
                "open_responses": {"adapter": True},
                "rate_limit": {"requests_per_second": 0.001, "burst_size": 1},
            },
        },
    }
    path = tmp_path_factory.mktemp("responses") / "config.json"
    path.write_text(json.dumps(config))
    env = {"RESPONSES_TEST_TOOL_KEY": "tool-secret"}
    first = GatewayProcess(path, workers=2, redis_url=url, redis_prefix=prefix, env=env).start()
    second = GatewayProcess(
        path,
        workers=1,
        redis_url=url,
        redis_prefix=prefix,
        env=env,
        extra_args=["--responses-ttl-secs", "600"],
    ).start()
    try:
        yield first, second, url, prefix
    finally:
        for gw in (second, first):
            gw.stop()
            print(f"--- {gw.describe()}")
            gw.close()
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="module")
def client_for() -> Callable[[GatewayProcess], openai.OpenAI]:
    def make(gw: GatewayProcess) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=TOKEN, max_retries=0, timeout=30)

    return make


def _chat_calls(upstream: ChatScript, since: int) -> list[dict[str, Any]]:
    return upstream.chat_requests()[since:]


def test_plain_response(gateways: Any, client_for: Any, upstream: ChatScript) -> None:
    gw = gateways[0]
    before = len(upstream.chat_requests())
    response = client_for(gw).responses.create(model="chat-model", input="hi", instructions="be brief")
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "echo: hi (messages=2)"
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 2
    [sent] = _chat_calls(upstream, before)
    assert sent["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert (
        sent["headers"][STEP_REQUEST_ID_HEADER] == f"{response._request_id}.step0"
    )  # the response's x-request-id
    assert sent["headers"]["X-Request-ID"] == f"{response._request_id}.step0"
    assert not [r for r in upstream.requests if r["path"].endswith("/responses")]


def test_streaming_response(gateways: Any, client_for: Any) -> None:
    stream = client_for(gateways[0]).responses.create(model="chat-model", input="stream me", stream=True)
    events = list(stream)
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: stream me (messages=1)"
    assert events[-1].response.output_text == text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_function_tool_round_trip_with_previous_response_id(gateways: Any, client_for: Any) -> None:
    client = client_for(gateways[0])
    first = client.responses.create(
        model="chat-model", input='call get_weather {"city": "paris"}', tools=[WEATHER]
    )
    [call] = first.output
    assert call.type == "function_call"
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "paris"}
    second = client.responses.create(
        model="chat-model",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "tool said: sunny"
    assert second.previous_response_id == first.id


def test_previous_response_id_across_instances_sharing_redis(
    gateways: Any, client_for: Any, upstream: ChatScript
) -> None:
    first_gw, second_gw, url, prefix = gateways
    one = client_for(first_gw).responses.create(model="chat-model", input="remember me")
    stored = redis.Redis.from_url(url).get(f"{prefix}:responses:{one.id}")
    assert stored is not None  # readable with redis-cli GET
    assert json.loads(stored)["response"]["id"] == one.id
    assert 0 < redis.Redis.from_url(url).ttl(f"{prefix}:responses:{one.id}") <= 30 * 24 * 3600
    before = len(upstream.chat_requests())
    two = client_for(second_gw).responses.create(
        model="chat-model", input="and now?", previous_response_id=one.id
    )
    assert two.output_text == "echo: and now? (messages=3)"
    assert 0 < redis.Redis.from_url(url).ttl(f"{prefix}:responses:{two.id}") <= 600  # --responses-ttl-secs
    [sent] = _chat_calls(upstream, before)
    assert [m["content"] for m in sent["body"]["messages"]] == [
        "remember me",
        "echo: remember me (messages=1)",
        "and now?",
    ]


def test_store_false_is_not_kept(gateways: Any, client_for: Any) -> None:
    client = client_for(gateways[0])
    one = client.responses.create(model="chat-model", input="forget me", store=False)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="chat-model", input="x", previous_response_id=one.id)
    assert caught.value.code == "previous_response_not_found"


def test_server_side_http_tool(gateways: Any, client_for: Any, upstream: ChatScript) -> None:
    before, tools_before = len(upstream.chat_requests()), len(upstream.tool_requests)
    response = client_for(gateways[0]).responses.create(
        model="chat-model",
        input='call lookup {"q": "moon"}',
        tools=[{"type": "hosted_tool", "name": "lookup"}],
    )
    assert response.output_text == 'tool said: {"tool":"lookup","args":{"q":"moon"}}'
    assert [item.type for item in response.output] == ["message"]
    assert [(t.type, t.name) for t in response.tools] == [("function", "lookup")]  # type: ignore[union-attr]
    sent = _chat_calls(upstream, before)
    assert len(sent) == 2
    assert sent[0]["headers"][STEP_REQUEST_ID_HEADER] != sent[1]["headers"][STEP_REQUEST_ID_HEADER]
    [tool_call] = upstream.tool_requests[tools_before:]
    assert tool_call["body"] == {"q": "moon"}
    assert tool_call["headers"]["X-Tool-Key"] == "tool-secret"


def test_server_side_tool_streaming(gateways: Any, client_for: Any) -> None:
    stream = client_for(gateways[0]).responses.create(
        model="chat-model",
        input='call lookup {"q": "sun"}',
        tools=[{"type": "hosted_tool", "name": "lookup"}],
        stream=True,
    )
    events = list(stream)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == 'tool said: {"tool":"lookup","args":{"q":"sun"}}'
    assert not [e for e in events if e.type.startswith("response.function_call_arguments")]


def test_the_step_limit(gateways: Any, client_for: Any, upstream: ChatScript) -> None:
    before = len(upstream.chat_requests())
    response = client_for(gateways[0]).responses.create(
        model="chat-model", input="loop lookup", tools=[{"type": "hosted_tool", "name": "lookup"}]
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_steps"
    assert len(_chat_calls(upstream, before)) == 3  # max_steps in the config


@pytest.mark.parametrize(
    ("tools", "code"),
    [
        ([{"type": "hosted_tool", "name": "nope"}], "unknown_tool"),
        ([{"type": "web_search"}], "unknown_tool"),
        ([{"type": "hosted_tool", "name": "lookup"}, {**WEATHER, "name": "lookup"}], "tool_name_collision"),
    ],
)
def test_unknown_hosted_tools_and_collisions_are_400(
    gateways: Any, client_for: Any, tools: list[dict[str, Any]], code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateways[0]).responses.create(model="chat-model", input="x", tools=tools)  # type: ignore[arg-type]
    assert caught.value.code == code


def test_without_the_adapter_responses_pass_through(
    gateways: Any, client_for: Any, upstream: ChatScript
) -> None:
    with pytest.raises(openai.NotFoundError):
        client_for(gateways[0]).responses.create(model="passthrough", input="x")
    assert upstream.requests[-1]["path"] == "/v1/responses"


def test_every_step_is_admitted_and_counted(gateways: Any, client_for: Any) -> None:
    gw = gateways[1]  # one worker, so the metrics below are this test's
    client = client_for(gw)
    # burst 3: a tool response takes two model calls, a plain one a third; then nothing is left.
    tool = client.responses.create(
        model="pooled", input='call lookup {"q": 1}', tools=[{"type": "hosted_tool", "name": "lookup"}]
    )
    assert tool.output_text.startswith("tool said:")
    client.responses.create(model="pooled", input="plain")
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="pooled", input="refused")
    metrics = urllib.request.urlopen(gw.metrics_url, timeout=10).read().decode()
    assert 'onwards_responses_tool_calls_total{outcome="ok",target="pooled",tool="lookup"} 1.0' in metrics
    assert 'onwards_responses_model_calls_count{target="pooled"} 3.0' in metrics  # the refused one too
    assert 'onwards_responses_model_calls_sum{target="pooled"} 4.0' in metrics
    assert 'onwards_responses_total{status="completed",target="pooled"} 2.0' in metrics
    assert 'onwards_responses_total{status="failed",target="pooled"} 1.0' in metrics
    assert 'onwards_responses_tool_duration_seconds_count{target="pooled",tool="lookup"} 1.0' in metrics


def test_a_refused_first_step_is_a_plain_http_error_even_when_streaming(
    gateways: Any, client_for: Any
) -> None:
    client = client_for(gateways[0])
    client.responses.create(model="tight", input="uses the only token")
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="tight", input="refused", stream=True)
    assert caught.value.code == "rate_limit"
    assert caught.value.response.headers["retry-after"]
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="tight", input="refused too")


def test_a_step_failing_mid_loop(gateways: Any, client_for: Any) -> None:
    client = client_for(gateways[0])
    hosted = [{"type": "hosted_tool", "name": "lookup"}]
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model="chat-model", input="then fail: call lookup {}", tools=hosted)  # type: ignore[arg-type]
    assert caught.value.status_code == 500
    events = list(
        client.responses.create(
            model="chat-model", input="then fail: call lookup {}", tools=hosted, stream=True
        )  # type: ignore[arg-type]
    )
    assert events[0].type == "response.created"
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None


def _single_is_free(client: openai.OpenAI) -> bool:
    try:
        return client.responses.create(model="single", input="next").status == "completed"
    except openai.RateLimitError:
        return False  # the step of the request that left still holds the one permit


def test_a_client_leaving_mid_stream_frees_the_step_permit(gateways: Any, client_for: Any) -> None:
    gw = gateways[0]
    headers = {"authorization": f"Bearer {TOKEN}"}
    body = {"model": "single", "input": "answer slowly", "stream": True}
    with httpx.stream("POST", f"{gw.url}/v1/responses", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: response.output_text.delta"):
                break  # leave while the upstream still has ~18 s of stream to send
    # The upstream would hold the permit ~18 s more; the gateway notices the client left first.
    wait_until(lambda: _single_is_free(client_for(gw)), timeout=10, interval=0.2)


def test_a_client_leaving_a_waiting_response_frees_the_step_permit(gateways: Any, client_for: Any) -> None:
    gw = gateways[0]
    headers = {"authorization": f"Bearer {TOKEN}"}
    body = {"model": "single", "input": "answer slowly"}
    with pytest.raises(httpx.ReadTimeout):  # the upstream answers after 18 s; the client gives up at 1 s
        httpx.post(f"{gw.url}/v1/responses", json=body, headers=headers, timeout=1)
    wait_until(lambda: _single_is_free(client_for(gw)), timeout=10, interval=0.2)


def test_the_sdk_stream_helper_accumulates_the_events(gateways: Any, client_for: Any) -> None:
    # responses.stream() checks item identities and indexes as it accumulates: a strict reader.
    client = client_for(gateways[0])
    with client.responses.stream(
        model="chat-model",
        input='call lookup {"q": "x"}',
        tools=[{"type": "hosted_tool", "name": "lookup"}],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_response()
    assert final.output_text == 'tool said: {"tool":"lookup","args":{"q":"x"}}'
    with client.responses.stream(
        model="chat-model", input='call get_weather {"city": "rome"}', tools=[WEATHER]
    ) as stream:  # type: ignore[list-item]
        final = stream.get_final_response()
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "rome"}


def test_reasoning_becomes_a_reasoning_item(gateways: Any, client_for: Any) -> None:
    client = client_for(gateways[0])
    plain = client.responses.create(model="chat-model", input="think first")
    assert [item.type for item in plain.output] == ["reasoning", "message"]
    assert plain.output[0].content[0].text == "hmm, let me see"  # type: ignore[union-attr,index]
    with client.responses.stream(model="chat-model", input="think first") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.reasoning_text.delta" in kinds
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "hmm, let me see"  # type: ignore[union-attr,index]
    assert final.output_text == "echo: think first (messages=1)"


def _token_level(url: str, prefix: str, limiter_id: str) -> float:
    value = redis.Redis.from_url(url).hget(f"{prefix}:{{{prefix}}}:tk:{limiter_id}", "tokens")
    return METERED_BURST if value is None else float(value)


def _metric(text: str, name: str, labels: str) -> float:
    """A sample of the scrape; 0 when the series has not been written yet."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _access_lines(gw: GatewayProcess, request_id: str) -> list[str]:
    return [line for line in gw.output().splitlines() if "onwards.access" in line and request_id in line]


@pytest.mark.parametrize("stream", [False, True])
def test_every_step_reserves_and_settles_its_own_usage(
    gateways: Any, client_for: Any, upstream: ChatScript, stream: bool
) -> None:
    gw, url, prefix = gateways[1], gateways[2], gateways[3]  # one worker: its scrape is the whole count
    labels = 'key="none",kind="{kind}",provider="metered/0",target="metered"'

    def counted() -> tuple[float, float]:
        text = urllib.request.urlopen(gw.metrics_url, timeout=10).read().decode()
        return (
            _metric(text, "onwards_tokens_total", labels.format(kind="prompt")),
            _metric(text, "onwards_tokens_total", labels.format(kind="completion")),
        )

    before, counted_before = _token_level(url, prefix, "target:metered"), counted()
    calls = len(upstream.chat_requests())
    client = client_for(gw)
    hosted = [{"type": "hosted_tool", "name": "lookup"}]
    if stream:
        with client.responses.stream(
            model="metered",
            input='call lookup {"q": 1}',
            tools=hosted,  # type: ignore[arg-type]
        ) as events:
            response = events.get_final_response()
        rid = None
    else:
        raw = client.responses.with_raw_response.create(
            model="metered",
            input='call lookup {"q": 1}',
            tools=hosted,  # type: ignore[arg-type]
        )
        response, rid = raw.parse(), raw.headers["x-request-id"]
    assert response.output_text.startswith("tool said:")
    sent = _chat_calls(upstream, calls)
    assert len(sent) == 2
    if stream:  # streamed steps ask the upstream for their usage
        assert all(s["body"]["stream_options"] == {"include_usage": True} for s in sent)
        rid = sent[0]["headers"][STEP_REQUEST_ID_HEADER].rsplit(".", 1)[0]
    # The first step sent one message, the second the call and its result too: 10 + 30 prompt
    # tokens, 5 + 5 completion tokens, and the Response reports their sum.
    assert [len(s["body"]["messages"]) for s in sent] == [1, 3]
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (40, 10, 50)
    assert usage.input_tokens_details.cached_tokens == 4
    assert usage.output_tokens_details.reasoning_tokens == 2
    # Each step's access line carries its own tokens; the response's line has none (the steps'
    # lines already count them).
    wait_until(lambda: len(_access_lines(gw, rid)) == 3, timeout=10, message="access lines")
    lines = {line.split("request_id=")[1].split()[0]: line for line in _access_lines(gw, rid)}
    assert "prompt_tokens=10 completion_tokens=5" in lines[f"{rid}.step0"]
    assert "prompt_tokens=30 completion_tokens=5" in lines[f"{rid}.step2"]
    assert "prompt_tokens" not in lines[rid]
    # Each step reserved its estimate and settled to what the upstream reported: the bucket lost
    # 50 tokens in all (plus at most a token of refill over the test). Settling is sent after
    # the answer, so it is waited for.
    wait_until(
        lambda: before - 50 <= _token_level(url, prefix, "target:metered") <= before - 49,
        timeout=10,
        message=f"the bucket did not settle to {before - 50}: {_token_level(url, prefix, 'target:metered')}",
    )
    prompt, completion = counted()
    assert (prompt, completion) == (counted_before[0] + 40, counted_before[1] + 10)  # both steps
