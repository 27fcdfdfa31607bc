"""The mock provider through the whole request path, in process (httpx over ASGI, no socket).

A `mock://` provider is a provider like any other: the model rewrite, response headers, sanitizing,
timeouts, fallback, limits and metrics labels apply to it unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from onwards.app import create_app
from onwards.settings import Settings

CHAT = "/v1/chat/completions"
Runner = Callable[[dict[str, Any]], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def app_client(write_config) -> Runner:
    @contextlib.asynccontextmanager
    async def run(config: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
        path = write_config(config)
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        try:
            app = create_app(Settings(targets=str(path), watch=False, metrics=False, log_level="warning"))
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        async with app.starlette.router.lifespan_context(app.starlette):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gateway", timeout=10
            ) as client:
                yield client

    return run


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


async def test_whole_answer_with_model_rewrite_and_response_headers(app_client):
    config = {
        "targets": {
            "demo": {
                "url": "mock://",
                "onwards_model": "mock-large",
                "response_headers": {"X-Price": "0"},
            }
        }
    }
    async with app_client(config) as client:
        response = await client.post(CHAT, json=chat("demo"))
    assert response.status_code == 200
    assert response.headers["x-price"] == "0"
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert body["model"] == "mock-large"
    assert body["choices"][0]["message"]["content"].endswith("You said: hello")


async def test_streamed_answer_with_usage(app_client):
    config = {"targets": {"demo": {"url": "mock://", "mock": {"reply": "a b c"}}}}
    async with app_client(config) as client:
        response = await client.post(
            CHAT, json=chat("demo", stream=True, stream_options={"include_usage": True})
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    events = [e for e in response.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    last = orjson.loads(events[-2][6:])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3


async def test_a_slow_mock_times_out_and_fails_over(app_client):
    config = {
        "targets": {
            "pool": {
                "strategy": "priority",
                "fallback": {"enabled": True},
                "providers": [
                    {
                        "url": "mock://slow",
                        "mock": {"delay_ms": 5000, "reply": "slow"},
                        "request_timeout_secs": 0.05,
                    },
                    {"url": "mock://fast", "mock": {"reply": "fast"}},
                ],
            },
            "alone": {"url": "mock://", "mock": {"delay_ms": 5000}, "request_timeout_secs": 0.05},
        }
    }
    async with app_client(config) as client:
        failed_over = await client.post(CHAT, json=chat("pool"))
        timed_out = await client.post(CHAT, json=chat("alone"))
    assert failed_over.status_code == 200
    assert failed_over.json()["choices"][0]["message"]["content"] == "fast"
    assert timed_out.status_code == 504
    assert timed_out.json()["error"]["code"]


async def test_limits_and_keys_apply_to_a_mock_target(app_client):
    config = {
        "auth": {"global_keys": ["sk-demo"]},
        "targets": {
            "demo": {"url": "mock://", "rate_limit": {"requests_per_second": 0.001, "burst_size": 2}}
        },
    }
    headers = {"Authorization": "Bearer sk-demo"}
    async with app_client(config) as client:
        assert (await client.post(CHAT, json=chat("demo"))).status_code == 401
        statuses = [
            (await client.post(CHAT, json=chat("demo"), headers=headers)).status_code for _ in range(3)
        ]
        embeddings = await client.post(
            "/v1/embeddings",
            json={"model": "demo", "input": "x"},
            headers={"Authorization": "Bearer sk-demo"},
        )
    assert statuses == [200, 200, 429]
    assert embeddings.status_code == 429  # the same bucket: the target's


async def test_sanitized_mock_answer_names_the_requested_model(app_client):
    config = {"targets": {"demo": {"url": "mock://", "onwards_model": "inner", "sanitize_response": True}}}
    async with app_client(config) as client:
        response = await client.post(CHAT, json=chat("demo"))
    assert response.status_code == 200
    assert response.json()["model"] == "demo"
