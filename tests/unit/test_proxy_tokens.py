"""Token limits through the whole app in process (the in-process limiter): the headers clients see,
settlement to the reported usage, what is kept when none is reported, streams asked for usage."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.support.app_client import app_client
from tests.support.mock_upstream import MockUpstream
from tests.unit import test_proxy_app as app_tests

gateway_app = app_tests.gateway_app  # the fixture: the app with its lifespan, and an httpx client
CHAT = app_tests.CHAT
# The mock counts words of every string in the messages ("user" + 2) and answers "hello from a".
ACTUAL = 3 + 3


@pytest.fixture
def mock_a(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("a")


def config(mock: MockUpstream, **fields: Any) -> dict[str, Any]:
    # One token a minute: nothing refills during a test.
    limit = {"tokens_per_minute": 1, "burst_tokens": 1000}
    return {"targets": {"gpt": {"url": mock.url + "/v1", "token_limit": limit, **fields}}}


def body(**extra: Any) -> bytes:
    return json.dumps(
        {"model": "gpt", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50, **extra}
    ).encode()


def cost(raw: bytes, max_tokens: int = 50) -> int:
    return math.ceil(len(raw) / 4) + max_tokens


def remaining(response) -> int:
    return int(response.headers["x-ratelimit-remaining-tokens"])


@pytest.mark.parametrize("sanitize", [False, True])
async def test_a_json_answer_settles_to_its_usage(gateway_app, mock_a, sanitize: bool) -> None:
    raw = body()
    async with gateway_app(config(mock_a, sanitize_response=sanitize)) as client:
        first = await client.post(CHAT, content=raw)
        second = await client.post(CHAT, content=raw)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert remaining(first) == 1000 - cost(raw)
    # The first request's reservation was settled to its usage before the second was admitted.
    assert remaining(second) == 1000 - ACTUAL - cost(raw)
    assert first.headers["x-ratelimit-reset-tokens"].endswith("s")
    assert "x-ratelimit-limit-requests" not in first.headers


async def test_an_upstream_error_keeps_the_reservation_and_still_has_headers(gateway_app, mock_a) -> None:
    raw = body()
    async with gateway_app(config(mock_a)) as client:
        failed = await client.post(CHAT, content=raw, headers={"x-mock-status": "500"})
        after = await client.post(CHAT, content=raw)
    assert failed.status_code == 500
    assert remaining(failed) == 1000 - cost(raw)
    assert remaining(after) == 1000 - 2 * cost(raw)  # no usage: the whole reservation stayed spent


async def test_a_stream_is_asked_for_usage_and_the_client_sees_none(gateway_app, mock_a) -> None:
    raw = body(stream=True)
    async with gateway_app(config(mock_a)) as client:
        streamed = await client.post(CHAT, content=raw, headers={"x-mock-chunks": "3"})
        after = await client.post(CHAT, content=body())
    assert streamed.status_code == 200
    assert streamed.headers["x-ratelimit-limit-tokens"] == "1000"
    [asked, _] = mock_a.requests
    assert asked.json()["stream_options"] == {"include_usage": True}
    events = app_tests.sse_data(streamed.content)
    assert events[-1] == "[DONE]" and len(events) == 4
    assert all("usage" not in json.loads(e) for e in events[:-1])
    assert remaining(after) == 1000 - ACTUAL - cost(body())


async def test_a_stream_that_asked_keeps_its_usage_chunk_and_options(gateway_app, mock_a) -> None:
    raw = body(stream=True, stream_options={"include_usage": True})
    async with gateway_app(config(mock_a)) as client:
        streamed = await client.post(CHAT, content=raw, headers={"x-mock-chunks": "2"})
    assert mock_a.requests[0].body == raw  # nothing to add: forwarded as sent
    events = app_tests.sse_data(streamed.content)
    assert json.loads(events[-2])["usage"]["total_tokens"] == ACTUAL


async def test_an_estimate_over_the_burst_is_refused_without_calling_the_upstream(
    gateway_app, mock_a
) -> None:
    async with gateway_app(config(mock_a)) as client:
        refused = await client.post(CHAT, content=body(max_tokens=5000))
    assert refused.status_code == 429
    assert refused.headers["x-should-retry"] == "false"
    assert refused.json()["error"]["type"] == "tokens"
    assert mock_a.requests == []


async def test_a_request_limit_alone_sends_the_request_headers(gateway_app, mock_a) -> None:
    cfg = {
        "targets": {
            "gpt": {"url": mock_a.url + "/v1", "rate_limit": {"requests_per_second": 0.001, "burst_size": 3}}
        }
    }
    async with gateway_app(cfg) as client:
        first = await client.post(CHAT, content=body())
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert "x-ratelimit-limit-tokens" not in first.headers
    assert mock_a.requests[0].body == body()  # no token limit: the body is not touched


async def test_the_gateways_headers_replace_the_providers_own(gateway_app, mock_a) -> None:
    # Stands in for a provider's own headers: response_headers are added to its answers.
    upstream = {"x-ratelimit-remaining-tokens": "999999", "x-ratelimit-limit-requests": "5000"}
    async with gateway_app(config(mock_a, response_headers=upstream)) as client:
        reply = await client.post(CHAT, content=body())
    assert reply.headers.get_list("x-ratelimit-remaining-tokens") == [str(1000 - cost(body()))]
    # A kind the gateway does not limit keeps the provider's header.
    assert reply.headers.get_list("x-ratelimit-limit-requests") == ["5000"]


async def test_strict_mode_answers_carry_the_headers_and_settle(write_config, mock_a) -> None:
    cfg = {"strict_mode": True, **config(mock_a)}
    raw = body()
    async with app_client(write_config(cfg)) as client:
        first = await client.post(CHAT, content=raw, headers={"content-type": "application/json"})
        second = await client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert first.status_code == second.status_code == 200, first.text
    assert remaining(first) == 1000 - cost(raw)
    assert remaining(second) == 1000 - ACTUAL - cost(raw)
    # Strict mode reads the stream itself: the gateway never asks it for usage on the client's behalf.
    async with app_client(write_config(cfg)) as client:
        streamed = await client.post(
            CHAT, content=body(stream=True), headers={"content-type": "application/json"}
        )
    assert streamed.status_code == 200
    assert "stream_options" not in mock_a.requests[-1].json()
