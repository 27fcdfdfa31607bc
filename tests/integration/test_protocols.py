"""Protocol conversion through a real gateway, with the official Anthropic and OpenAI SDKs as clients.

One gateway (one worker, in-process limiter) serves targets backed by two mock providers, one speaking
OpenAI Chat Completions and one Anthropic Messages (tests/support/protocol_upstream.py). Each test checks
what the client got and what the provider saw.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.support.processes import GatewayProcess
from tests.support.protocol_upstream import RETRY_AFTER, TOOL_ARGS, ProtocolUpstream

pytestmark = pytest.mark.integration

CLIENT_KEY = "sk-proto-client-7f3a"
OA_KEY = "sk-upstream-openai-1b2c"
AN_KEY = "sk-upstream-anthropic-9d8e"
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_FN = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": WEATHER["input_schema"],
    },
}


@pytest.fixture(scope="module")
def mocks() -> Iterator[tuple[ProtocolUpstream, ProtocolUpstream]]:
    oa = ProtocolUpstream("oa", format="openai").start()
    an = ProtocolUpstream("an", format="anthropic").start()
    try:
        yield oa, an
    finally:
        oa.stop()
        an.stop()


@pytest.fixture(scope="module")
def gateway(
    mocks: tuple[ProtocolUpstream, ProtocolUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    oa, an = mocks
    openai_provider = {"url": f"{oa.url}/v1", "onwards_key": OA_KEY, "onwards_model": "up-oa"}
    anthropic_provider = {"url": an.url, "onwards_key": AN_KEY, "format": "anthropic"}
    fallback = {"enabled": True, "on_status": [5]}
    config = {
        "targets": {
            "gpt": openai_provider,
            "claude": anthropic_provider,
            "anthropic-first": {
                "strategy": "priority",
                "fallback": fallback,
                "providers": [anthropic_provider, openai_provider],
            },
            "openai-first": {
                "strategy": "priority",
                "fallback": fallback,
                "providers": [openai_provider, anthropic_provider],
            },
            "keyed": {**openai_provider, "keys": [CLIENT_KEY]},
            "clean": {**openai_provider, "sanitize_response": True},
            "claude-clean": {**anthropic_provider, "sanitize_response": True},
            "claude-responses": {**anthropic_provider, "open_responses": {"adapter": True}},
            "gpt-tokens": {**openai_provider, "token_limit": {"tokens_per_minute": 100000}},
            "claude-tokens": {**anthropic_provider, "token_limit": {"tokens_per_minute": 100000}},
            "limited": {**openai_provider, "rate_limit": {"requests_per_second": 0.001, "burst_size": 1}},
        }
    }
    path: Path = tmp_path_factory.mktemp("protocols") / "config.json"
    path.write_text(json.dumps(config))
    process = GatewayProcess(path, workers=1, extra_args=["--watch=false"])
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- {process.describe()}")
        process.close()


@pytest.fixture
def oa(mocks: tuple[ProtocolUpstream, ProtocolUpstream]) -> ProtocolUpstream:
    mocks[0].clear()
    return mocks[0]


@pytest.fixture
def an(mocks: tuple[ProtocolUpstream, ProtocolUpstream]) -> ProtocolUpstream:
    mocks[1].clear()
    return mocks[1]


def claude_client(gw: GatewayProcess, **options: Any) -> anthropic.Anthropic:
    options.setdefault("api_key", CLIENT_KEY)
    return anthropic.Anthropic(base_url=gw.url, max_retries=0, timeout=20, **options)


def openai_client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def raw_post(
    gw: GatewayProcess, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=20)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        name = next((line[7:] for line in lines if line.startswith("event: ")), "")
        data = "".join(line[6:] for line in lines if line.startswith("data: "))
        events.append((name, json.loads(data)))
    return events


# -- Anthropic clients, OpenAI provider --------------------------------------------------------------


def test_messages_over_an_openai_provider(gateway: GatewayProcess, oa: ProtocolUpstream) -> None:
    message = claude_client(gateway).messages.create(
        model="gpt",
        max_tokens=100,
        system="Be brief.",
        extra_body={"temperature": 0.5},  # this SDK version no longer has the parameter
        stop_sequences=["END"],
        metadata={"user_id": "u-42"},
        messages=[{"role": "user", "content": "Hello there"}],
    )
    assert message.content[0].type == "text" and message.content[0].text == "hello from oa"
    assert message.stop_reason == "end_turn" and message.role == "assistant"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 3
    seen = oa.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {OA_KEY}" and "x-api-key" not in seen.headers
    assert seen.json() == {
        "model": "up-oa",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        "max_tokens": 100,
        "temperature": 0.5,
        "stop": ["END"],
        "user": "u-42",
    }


def test_messages_stream_over_an_openai_provider(gateway: GatewayProcess, oa: ProtocolUpstream) -> None:
    with claude_client(gateway).messages.stream(
        model="gpt", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "hello from oa"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3
    sent = oa.requests[-1].json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tools_round_trip_over_an_openai_provider(
    gateway: GatewayProcess, oa: ProtocolUpstream, stream: bool
) -> None:
    client = claude_client(gateway)
    history: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    ask = {"model": "gpt", "max_tokens": 100, "tools": [WEATHER], "tool_choice": {"type": "auto"}}
    if stream:
        with client.messages.stream(messages=history, **ask) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(messages=history, **ask)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == TOOL_ARGS
    assert oa.requests[-1].json()["tools"] == [WEATHER_FN]
    history += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]},
    ]
    second = client.messages.create(messages=history, **ask)
    assert second.content[0].text == "result: 18C"
    sent = oa.requests[-1].json()["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "18C"}


def test_upstream_error_in_anthropic_shape(gateway: GatewayProcess, oa: ProtocolUpstream) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude_client(gateway).messages.create(
            model="gpt",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "400"},
        )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "mock upstream oa answered 400"},
    }


def test_upstream_429_keeps_retry_after(gateway: GatewayProcess, oa: ProtocolUpstream) -> None:
    oa.fail_next(1, 429)
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude_client(gateway).messages.create(
            model="gpt", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.response.headers["retry-after"] == RETRY_AFTER
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_gateway_rate_limit_in_anthropic_shape(gateway: GatewayProcess, oa: ProtocolUpstream) -> None:
    client = claude_client(gateway)
    client.messages.create(model="limited", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="limited", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert len(oa.requests) == 1


def test_gateway_errors_in_anthropic_shape(gateway: GatewayProcess, oa: ProtocolUpstream) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        claude_client(gateway).messages.create(
            model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert not_found.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
        claude_client(gateway, api_key="sk-wrong").messages.create(
            model="keyed", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert unauthenticated.value.body["type"] == "error"  # type: ignore[index]
    assert unauthenticated.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert oa.requests == []


@pytest.mark.parametrize(
    "credentials",
    [{"api_key": CLIENT_KEY}, {"api_key": None, "auth_token": CLIENT_KEY}],
    ids=["x-api-key", "bearer"],
)
def test_keyed_target_accepts_either_header(
    gateway: GatewayProcess, oa: ProtocolUpstream, credentials: dict[str, Any]
) -> None:
    message = claude_client(gateway, **credentials).messages.create(
        model="keyed", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.content[0].text == "hello from oa"


def test_unconvertible_input_is_a_400_naming_the_field(gateway: GatewayProcess, oa: ProtocolUpstream) -> None:
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude_client(gateway).messages.create(
            model="gpt",
            max_tokens=10,
            messages=[{"role": "user", "content": [document]}],  # type: ignore[list-item]
        )
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and "messages.0.content.0" in error["message"]
    assert oa.requests == []


def test_count_tokens_estimated_or_passed_through(
    gateway: GatewayProcess, oa: ProtocolUpstream, an: ProtocolUpstream
) -> None:
    client = claude_client(gateway)
    messages = [{"role": "user", "content": "x" * 400}]
    estimated = client.messages.count_tokens(model="gpt", messages=messages)  # type: ignore[arg-type]
    assert estimated.input_tokens == 4 + 100
    assert oa.requests == []
    native = client.messages.count_tokens(model="claude", messages=messages)  # type: ignore[arg-type]
    assert native.input_tokens == 42
    assert an.requests[-1].path == "/v1/messages/count_tokens"


# -- Anthropic provider ------------------------------------------------------------------------------


def test_messages_pass_through_to_an_anthropic_provider(
    gateway: GatewayProcess, an: ProtocolUpstream
) -> None:
    message = claude_client(gateway).messages.create(
        model="claude", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text == "hello from an"
    seen = an.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == AN_KEY and "authorization" not in seen.headers
    assert seen.json() == {
        "model": "claude",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    sdk_version = seen.headers["anthropic-version"]  # the client's own version is forwarded as it is
    body = {"model": "claude", "max_tokens": 5, "messages": []}
    status, _, _ = raw_post(gateway, "/v1/messages", body, {"x-api-key": CLIENT_KEY})
    assert status == 200 and an.requests[-1].headers["anthropic-version"] == "2023-06-01" != sdk_version


def test_chat_over_an_anthropic_provider(gateway: GatewayProcess, an: ProtocolUpstream) -> None:
    reply = openai_client(gateway).chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        stop="END",
        user="u-1",
    )
    assert reply.choices[0].message.content == "hello from an" and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    seen = an.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == AN_KEY and seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    assert seen.json() == {
        "model": "claude",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 4096,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }


def test_chat_stream_over_an_anthropic_provider_with_usage(
    gateway: GatewayProcess, an: ProtocolUpstream
) -> None:
    stream = openai_client(gateway).chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello from an"
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tools_round_trip_over_an_anthropic_provider(
    gateway: GatewayProcess, an: ProtocolUpstream, stream: bool
) -> None:
    client = openai_client(gateway)
    history: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with client.chat.completions.stream(model="claude", messages=history, tools=[WEATHER_FN]) as s:  # type: ignore[list-item]
            for _ in s:
                pass
            first = s.get_final_completion().choices[0]
    else:
        first = client.chat.completions.create(model="claude", messages=history, tools=[WEATHER_FN]).choices[
            0
        ]  # type: ignore[list-item]
    assert first.finish_reason == "tool_calls"
    call = first.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == TOOL_ARGS  # type: ignore[union-attr]
    assert an.requests[-1].json()["tools"] == [WEATHER]
    history += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },  # type: ignore[union-attr]
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    second = client.chat.completions.create(model="claude", messages=history, tools=[WEATHER_FN])  # type: ignore[list-item]
    assert second.choices[0].message.content == "result: 18C"
    sent = an.requests[-1].json()["messages"]
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": TOOL_ARGS,
    }
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]


def test_anthropic_error_in_openai_shape(gateway: GatewayProcess, an: ProtocolUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gateway).chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "400"},
        )
    assert caught.value.body == {
        "message": "mock upstream an answered 400",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request_error",
    }
    an.fail_next(1, 429)
    with pytest.raises(openai.RateLimitError) as limited:
        openai_client(gateway).chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.response.headers["retry-after"] == RETRY_AFTER


def test_openai_input_without_counterpart_is_a_400(gateway: GatewayProcess, an: ProtocolUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gateway).chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}], n=2
        )
    assert caught.value.body["param"] == "n"  # type: ignore[index]
    assert an.requests == []


# -- failover across formats and a Claude-Code-style session ----------------------------------------


def test_failover_from_anthropic_to_openai_provider(
    gateway: GatewayProcess, oa: ProtocolUpstream, an: ProtocolUpstream
) -> None:
    an.fail_next(1, 503)
    message = claude_client(gateway).messages.create(
        model="anthropic-first", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.content[0].text == "hello from oa"
    assert [r.path for r in an.requests] == ["/v1/messages"] and [r.path for r in oa.requests] == [
        "/v1/chat/completions"
    ]
    an.fail_next(1, 503)
    reply = openai_client(gateway).chat.completions.create(
        model="anthropic-first", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "hello from oa"


def test_failover_from_openai_to_anthropic_provider(
    gateway: GatewayProcess, oa: ProtocolUpstream, an: ProtocolUpstream
) -> None:
    oa.fail_next(1, 502)
    with claude_client(gateway).messages.stream(
        model="openai-first", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        assert "".join(stream.text_stream) == "hello from an"
    assert len(oa.requests) == 1 and len(an.requests) == 1
    assert an.requests[0].json()["model"] == "openai-first"


def test_claude_code_style_session(gateway: GatewayProcess, oa: ProtocolUpstream) -> None:
    body = {
        "model": "gpt",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {
                "type": "text",
                "text": "Use the tools to help the user.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                    {
                        "type": "text",
                        "text": "What's the weather in Paris?",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            }
        ],
        "tools": [
            WEATHER,
            {
                "name": "Bash",
                "description": "Run a command",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            },
        ],
        "metadata": {"user_id": "user_abc_account_def_session_123"},
        "temperature": 1,
    }
    headers = {
        "x-api-key": CLIENT_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        "accept": "application/json",
    }
    status, response_headers, raw = raw_post(gateway, "/v1/messages?beta=true", body, headers)
    assert status == 200 and response_headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert all(name == payload["type"] for name, payload in events)
    kinds = [name for name, _ in events]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    start = next(p for n, p in events if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["name"] == "get_weather"
    partial = "".join(p["delta"]["partial_json"] for n, p in events if n == "content_block_delta")
    assert json.loads(partial) == TOOL_ARGS
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    sent = oa.requests[-1]
    assert sent.path == "/v1/chat/completions"
    converted = sent.json()
    assert converted["messages"][0] == {
        "role": "system",
        "content": "You are Claude Code.\n\nUse the tools to help the user.",
    }
    assert [t["function"]["name"] for t in converted["tools"]] == ["get_weather", "Bash"]
    assert converted["user"] == "user_abc_account_def_session_123" and converted["max_tokens"] == 32000


def test_converted_requests_are_counted_under_their_own_route(
    gateway: GatewayProcess, oa: ProtocolUpstream
) -> None:
    claude_client(gateway).messages.create(
        model="gpt", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    conn = http.client.HTTPConnection(gateway.host, gateway.metrics_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("onwards_requests_total{")
        and 'route="/v1/messages"' in line
        and 'target="gpt"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1, text[:2000]


def test_sanitized_conversion_names_the_alias_and_hides_provider_errors(
    gateway: GatewayProcess, oa: ProtocolUpstream
) -> None:
    client = claude_client(gateway)
    message = client.messages.create(
        model="clean", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.model == "clean" and message.content[0].text == "hello from oa"
    with client.messages.stream(
        model="clean", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as s:
        assert s.get_final_message().model == "clean"
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="clean",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "400"},
        )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "The upstream provider rejected the request."},
    }


def test_sanitized_passthrough_error_on_messages_is_in_anthropic_shape(
    gateway: GatewayProcess, an: ProtocolUpstream
) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude_client(gateway).messages.create(
            model="claude-clean",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "500"},
        )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "An internal error occurred. Please try again later."},
    }


def test_unconvertible_input_falls_over_to_a_provider_of_the_clients_protocol(
    gateway: GatewayProcess, oa: ProtocolUpstream, an: ProtocolUpstream
) -> None:
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
    }
    message = claude_client(gateway).messages.create(
        model="openai-first",
        max_tokens=10,
        messages=[{"role": "user", "content": [document]}],  # type: ignore[list-item]
    )
    assert message.content[0].text == "hello from an"
    assert oa.requests == [] and an.requests[-1].json()["messages"][0]["content"] == [document]


def test_the_responses_adapter_runs_over_an_anthropic_provider(
    gateway: GatewayProcess, an: ProtocolUpstream
) -> None:
    # The adapter's model calls are Chat Completions requests through the gateway, which converts them.
    response = openai_client(gateway).responses.create(model="claude-responses", input="Hello")
    assert response.output_text == "hello from an"
    assert an.requests[-1].path == "/v1/messages"
    assert an.requests[-1].json()["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]}
    ]


def test_token_limits_apply_to_converted_requests(
    gateway: GatewayProcess, oa: ProtocolUpstream, an: ProtocolUpstream
) -> None:
    raw = claude_client(gateway).messages.with_raw_response.create(
        model="gpt-tokens", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert raw.parse().content[0].text == "hello from oa"
    assert int(raw.headers["x-ratelimit-limit-tokens"]) == 100000
    with claude_client(gateway).messages.with_streaming_response.create(
        model="gpt-tokens", max_tokens=10, stream=True, messages=[{"role": "user", "content": "x"}]
    ) as streamed:
        assert "x-ratelimit-remaining-tokens" in streamed.headers
        assert b"message_stop" in streamed.read()
    chat = openai_client(gateway).chat.completions.with_raw_response.create(
        model="claude-tokens", messages=[{"role": "user", "content": "x"}]
    )
    assert chat.parse().choices[0].message.content == "hello from an"
    assert int(chat.headers["x-ratelimit-limit-tokens"]) == 100000
