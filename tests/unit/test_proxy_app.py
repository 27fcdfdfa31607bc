"""The whole app in process: httpx drives it over ASGI, a mock upstream answers from its own thread.

These cover the request path end to end (forwarding, auth, limits on the body, failover, sanitizing)
without starting processes; streaming timing and real disconnects are in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from onwards import __version__, errors
from onwards.app import create_app
from onwards.config import content_version
from onwards.proxy import sanitize
from onwards.settings import Settings
from tests.support.mock_upstream import EXTRA_FIELD, MockUpstream
from tests.support.processes import free_port

CHAT = "/v1/chat/completions"

Runner = Callable[[dict[str, Any]], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def gateway_app(write_config) -> Runner:
    """``async with gateway_app(config) as client``: the app with its lifespan running, and a client."""

    @contextlib.asynccontextmanager
    async def run(config: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
        path = write_config(config)
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        try:
            app = create_app(Settings(targets=str(path), watch=False, metrics=False, log_level="warning"))
        finally:
            # create_app installs the gateway's own log handler; pytest's capture must stay in place.
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        async with app.starlette.router.lifespan_context(app.starlette):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gateway", timeout=10
            ) as client:
                client.gateway = app.gateway  # type: ignore[attr-defined]
                yield client

    return run


@pytest.fixture
def mock_a(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("a")


@pytest.fixture
def mock_b(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("b")


def single(mock: MockUpstream, alias: str = "gpt", **fields: Any) -> dict[str, Any]:
    return {"targets": {alias: {"url": mock.url + "/v1", **fields}}}


def chat(model: str = "gpt", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def sse_data(body: bytes) -> list[str]:
    return [
        line[len("data: ") :]
        for event in body.decode().split("\n\n")
        for line in event.split("\n")
        if line.startswith("data: ")
    ]


# ---------------------------------------------------------------------------------------------
# Forwarding


async def test_method_path_query_and_body_are_forwarded_byte_for_byte(gateway_app, mock_a):
    # Odd spacing, escapes, raw UTF-8 and number spellings that a re-serialisation would change.
    body = (
        b'{ "messages" : [{"role":"user","content":"caf\\u00e9 \xc3\xa9 \\n"}],\n'
        b'  "model":"gpt", "temperature": 1.50, "n": 1e0 , "stop": null }'
    )
    async with gateway_app(single(mock_a)) as client:
        r = await client.post(
            f"{CHAT}?stream=false&after=a%2Fb%20c", content=body, headers={"content-type": "application/json"}
        )
    assert r.status_code == 200, r.text
    [seen] = mock_a.requests
    assert seen.method == "POST"
    assert seen.path == "/v1/chat/completions?stream=false&after=a%2Fb%20c"
    assert seen.body == body
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == str(len(body))


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH"])
async def test_other_methods_and_encoded_paths_are_forwarded(gateway_app, mock_a, method):
    content = b"" if method in ("GET", "DELETE") else b"opaque \x00 payload"
    async with gateway_app(single(mock_a)) as client:
        r = await client.request(
            method,
            "/v1/files/file%3A1/x%20y?limit=2&q=%3D%2F",
            content=content,
            headers={"model-override": "gpt"},
        )
    assert r.status_code == 200, r.text
    [seen] = mock_a.requests
    assert seen.method == method
    # The path arrives canonical (an escape that needs none decoded); the query string untouched.
    assert seen.path == "/v1/files/file:1/x%20y?limit=2&q=%3D%2F"
    assert seen.body == content
    assert "model-override" not in seen.headers


async def test_an_encoded_slash_in_the_path_is_refused_before_routing(gateway_app, mock_a):
    # Encoded slashes (issue 12) can be read two ways by a server behind the gateway.
    async with gateway_app(single(mock_a)) as client:
        r = await client.get("/v1/files/file%2F1", headers={"model-override": "gpt"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_path"
    assert mock_a.requests == []


async def test_get_with_model_override_and_no_body(gateway_app, mock_a):
    async with gateway_app(single(mock_a, onwards_model="upstream-model")) as client:
        r = await client.get("/v1/files/whatever", headers={"model-override": "gpt"})
    assert r.status_code == 200, r.text
    [seen] = mock_a.requests
    assert (seen.method, seen.path, seen.body) == ("GET", "/v1/files/whatever", b"")


async def test_head_gets_the_length_without_a_body(gateway_app, mock_a, caplog):
    async with gateway_app(single(mock_a)) as client:
        head = await client.head("/v1/files/x", headers={"model-override": "gpt"})
    assert head.status_code == 200
    assert head.content == b""
    # The length of the body a GET would have had.
    assert int(head.headers["content-length"]) > 0
    assert mock_a.requests[0].method == "HEAD"
    # No body follows a HEAD answer; that is not an upstream cutting its body short.
    assert not [r for r in caplog.records if "early" in r.getMessage()]


async def test_onwards_model_rewrites_only_the_model(gateway_app, mock_a):
    async with gateway_app(single(mock_a, onwards_model="upstream-model")) as client:
        r = await client.post(CHAT, json=chat(temperature=0.25, user="u-1"))
    assert r.status_code == 200, r.text
    sent = mock_a.requests[0].json()
    assert sent == {**chat(temperature=0.25, user="u-1"), "model": "upstream-model"}
    # Without sanitize_response the upstream's answer passes through, naming the upstream model.
    assert r.json()["model"] == "upstream-model"


async def test_onwards_model_with_model_override_rewrites_the_body_model(gateway_app, mock_a):
    async with gateway_app(single(mock_a, onwards_model="upstream-model")) as client:
        r = await client.post(CHAT, json=chat(model="ignored"), headers={"model-override": "gpt"})
    assert r.status_code == 200, r.text
    assert mock_a.requests[0].json()["model"] == "upstream-model"


@pytest.mark.parametrize("body", [b"not json at all", b"[1, 2]", b'{"messages": []}'])
async def test_onwards_model_on_a_body_it_cannot_rewrite_is_a_400(gateway_app, mock_a, body):
    async with gateway_app(single(mock_a, onwards_model="upstream-model")) as client:
        r = await client.post(CHAT, content=body, headers={"model-override": "gpt"})
    assert r.status_code == 400
    assert error_code(r) == "bad_request"
    assert mock_a.request_count == 0


async def test_a_body_no_provider_can_rewrite_is_a_400_without_failover(gateway_app, mock_a, mock_b):
    config = two_providers(mock_a.url, mock_b.url, enabled=True, on_status=[5])
    for provider in config["targets"]["gpt"]["providers"]:
        provider["onwards_model"] = "upstream-model"
    async with gateway_app(config) as client:
        r = await client.post(CHAT, content=b"not json", headers={"model-override": "gpt"})
    assert r.status_code == 400
    assert error_code(r) == "bad_request"
    assert (mock_a.request_count, mock_b.request_count) == (0, 0)


@pytest.mark.parametrize(
    ("fields", "header", "value"),
    [
        ({"onwards_key": "sk-up"}, "authorization", "Bearer sk-up"),
        ({"onwards_key": "sk-up", "upstream_auth_header_name": "X-Api-Key"}, "x-api-key", "Bearer sk-up"),
        (
            {
                "onwards_key": "sk-up",
                "upstream_auth_header_name": "api-key",
                "upstream_auth_header_prefix": "",
            },
            "api-key",
            "sk-up",
        ),
        ({"onwards_key": "sk-up", "upstream_auth_header_prefix": "Token "}, "authorization", "Token sk-up"),
        (
            {
                "onwards_key": "sk-up",
                "upstream_auth_header_name": "x-goog-api-key",
                "upstream_auth_header_prefix": "",
            },
            "x-goog-api-key",
            "sk-up",
        ),
    ],
)
async def test_upstream_credential_replaces_the_callers(gateway_app, mock_a, fields, header, value):
    # The caller's own credentials, plus one under the provider's header name whatever that is.
    caller = {
        "authorization": "Bearer client-secret",
        "x-api-key": "client-x",
        "api-key": "client-a",
        header: "client-same-name",
    }
    async with gateway_app(single(mock_a, **fields)) as client:
        r = await client.post(CHAT, json=chat(), headers=caller)
    assert r.status_code == 200, r.text
    seen = mock_a.requests[0].headers
    assert seen[header] == value
    for name, sent in seen.items():
        assert "client-" not in sent, f"caller credential reached the upstream in {name}"
    if header != "authorization":
        assert "authorization" not in seen


async def test_no_upstream_key_sends_no_credential(gateway_app, mock_a):
    config = single(mock_a, keys=["client-secret"])
    async with gateway_app(config) as client:
        r = await client.post(CHAT, json=chat(), headers={"authorization": "Bearer client-secret"})
    assert r.status_code == 200, r.text
    seen = mock_a.requests[0].headers
    assert "authorization" not in seen
    assert "client-secret" not in json.dumps(seen)


async def test_browser_and_conditional_headers_are_dropped_sdk_headers_kept(gateway_app, mock_a):
    sent = {
        "cookie": "session=1",
        "origin": "https://app.example",
        "referer": "https://app.example/page",
        "sec-fetch-mode": "cors",
        "sec-ch-ua": '"Chromium";v="126"',
        "if-none-match": '"etag"',
        "user-agent": "OpenAI/Python 1.0",
        "x-stainless-lang": "python",
        "openai-organization": "org-1",
        "anthropic-version": "2023-06-01",
        "accept": "application/json",
    }
    async with gateway_app(single(mock_a)) as client:
        r = await client.post(CHAT, json=chat(), headers=sent)
    assert r.status_code == 200, r.text
    seen = mock_a.requests[0].headers
    for name in ("cookie", "origin", "referer", "sec-fetch-mode", "sec-ch-ua", "if-none-match"):
        assert name not in seen
    for name in ("user-agent", "x-stainless-lang", "openai-organization", "anthropic-version", "accept"):
        assert seen[name] == sent[name]
    # The upstream Host is the provider's, not the gateway's.
    assert seen["host"] == f"127.0.0.1:{mock_a.port}"


async def test_response_headers_are_added_and_override_upstream_ones(gateway_app, mock_a):
    config = {
        "targets": {
            "gpt": {
                "response_headers": {"X-Pool": "pool", "X-Both": "pool", "X-Mock-Name": "renamed"},
                "providers": [{"url": mock_a.url, "response_headers": {"x-both": "provider"}}],
            }
        }
    }
    async with gateway_app(config) as client:
        ok = await client.post(CHAT, json=chat())
        failed = await client.post(CHAT, json=chat(), headers={"x-mock-status": "500"})
    for r in (ok, failed):
        assert r.headers["x-pool"] == "pool"
        assert r.headers["x-both"] == "provider"
        # Replaced, not added next to the upstream's value.
        assert r.headers.get_list("x-mock-name") == ["renamed"]
    assert ok.status_code == 200
    assert failed.status_code == 500


async def test_upstream_response_headers_pass_through(gateway_app, mock_a):
    async with gateway_app(single(mock_a)) as client:
        r = await client.post(CHAT, json=chat())
    assert r.headers["x-mock-name"] == "a"
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)


# ---------------------------------------------------------------------------------------------
# Gateway errors before the upstream


def padded_chat(size: int) -> bytes:
    body = b'{"model":"gpt","pad":""}'
    return body[:-2] + b"x" * (size - len(body)) + b'"}'


async def test_body_at_the_limit_passes_one_byte_over_is_413(gateway_app, mock_a):
    async with gateway_app({**single(mock_a), "max_body_bytes": 64}) as client:
        at_limit = await client.post(CHAT, content=padded_chat(64))
        over = await client.post(CHAT, content=padded_chat(65))
    assert at_limit.status_code == 200, at_limit.text
    assert over.status_code == 413
    assert over.json()["error"] == {
        "message": "Request body too large: the maximum allowed size is 64 bytes.",
        "type": "invalid_request_error",
        "param": None,
        "code": "payload_too_large",
    }
    assert mock_a.request_count == 1


async def test_chunked_body_over_the_limit_is_413(gateway_app, mock_a):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model":"gpt","pad":"'
        for _ in range(10):
            yield b"x" * 20
        yield b'"}'

    async with gateway_app({**single(mock_a), "max_body_bytes": 100}) as client:
        r = await client.post(CHAT, content=chunks())
    assert r.status_code == 413
    assert error_code(r) == "payload_too_large"
    assert mock_a.request_count == 0


async def test_declared_content_length_over_the_limit_is_refused_before_reading(gateway_app, mock_a):
    read = []

    async def body() -> AsyncIterator[bytes]:
        read.append(True)
        yield b"x" * 1000

    async with gateway_app({**single(mock_a), "max_body_bytes": 100}) as client:
        r = await client.post(CHAT, content=body(), headers={"content-length": "1000"})
    assert r.status_code == 413
    assert error_code(r) == "payload_too_large"
    assert read == [], "the gateway read a body its content-length already ruled out"


async def test_unknown_model_is_404_before_auth(gateway_app, mock_a):
    async with gateway_app(single(mock_a, keys=["sk-1"])) as client:
        r = await client.post(CHAT, json=chat(model="no-such-model"))
    assert r.status_code == 404
    assert r.content == errors.model_not_found("no-such-model")
    assert r.json()["error"]["message"] == (
        "The model `no-such-model` does not exist or you do not have access to it."
    )
    assert "x-request-id" in r.headers


async def test_auth_errors(gateway_app, mock_a):
    config = {
        "auth": {"global_keys": [], "key_definitions": {"alice": {"key": "sk-alice"}}},
        "targets": {"gpt": {"url": mock_a.url, "keys": ["alice", "sk-literal"]}},
    }
    async with gateway_app(config) as client:
        missing = await client.post(CHAT, json=chat())
        basic = await client.post(CHAT, json=chat(), headers={"authorization": "Basic c2stYWxpY2U6"})
        wrong = await client.post(CHAT, json=chat(), headers={"authorization": "Bearer sk-wrong"})
        by_name = await client.post(CHAT, json=chat(), headers={"authorization": "Bearer alice"})
        defined = await client.post(CHAT, json=chat(), headers={"authorization": "Bearer sk-alice"})
        literal = await client.post(CHAT, json=chat(), headers={"authorization": "bearer sk-literal"})
    assert (missing.status_code, missing.content) == (401, errors.UNAUTHENTICATED)
    assert (basic.status_code, basic.content) == (401, errors.UNAUTHENTICATED)
    assert (wrong.status_code, wrong.content) == (401, errors.INVALID_KEY)
    assert (by_name.status_code, by_name.content) == (401, errors.INVALID_KEY)
    assert defined.status_code == 200
    assert literal.status_code == 200
    assert mock_a.request_count == 2


@pytest.mark.parametrize(
    ("content", "headers", "code", "param"),
    [
        (b"", {}, "bad_request", "model"),
        (b"{not json", {}, "bad_request", "model"),
        (b'["gpt"]', {}, "bad_request", "model"),
        (b'{"model": 5}', {}, "bad_request", "model"),
    ],
)
async def test_unroutable_requests_are_400(gateway_app, mock_a, content, headers, code, param):
    async with gateway_app(single(mock_a)) as client:
        r = await client.post(CHAT, content=content, headers=headers)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["param"] == param
    assert r.headers["content-type"] == "application/json"
    assert mock_a.request_count == 0


async def test_non_ascii_model_override_is_400(gateway_app, mock_a):
    async with gateway_app(single(mock_a)) as client:
        r = await client.post(CHAT, json=chat(), headers=[(b"model-override", b"gp\xc3\xa9")])
    assert r.status_code == 400
    assert r.content == errors.MISSING_MODEL


# ---------------------------------------------------------------------------------------------
# Local routes


async def test_models_list_is_filtered_by_token(gateway_app, mock_a):
    config = {
        "targets": {
            "open": {"url": mock_a.url},
            "keyed": {"url": mock_a.url, "keys": ["sk-1"]},
            "other": {"url": mock_a.url, "keys": ["sk-2"]},
        }
    }
    async with gateway_app(config) as client:
        anonymous = await client.get("/v1/models")
        wrong = await client.get("/v1/models", headers={"authorization": "Bearer sk-nope"})
        with_key = await client.get("/v1/models", headers={"authorization": "Bearer sk-1"})
        short = await client.get("/models", headers={"authorization": "Bearer sk-2"})

    def ids(r: httpx.Response) -> list[str]:
        assert r.status_code == 200
        assert r.json()["object"] == "list"
        return [m["id"] for m in r.json()["data"]]

    assert ids(anonymous) == ["open"]
    assert ids(wrong) == ["open"]
    assert ids(with_key) == ["open", "keyed"]
    assert ids(short) == ["open", "other"]
    entry = with_key.json()["data"][0]
    assert set(entry) == {"id", "object", "created", "owned_by"}
    assert entry["object"] == "model"
    assert abs(entry["created"] - time.time()) < 60
    assert mock_a.request_count == 0


async def test_health_and_ready(gateway_app, mock_a, write_config):
    config = single(mock_a)
    async with gateway_app(config) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")
    assert health.status_code == 200
    body = health.json()
    assert set(body) == {"status", "version", "uptime_seconds", "config_version"}
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    assert 0 <= body["uptime_seconds"] < 60
    # write_config wrote the same document gateway_app loaded, so the content hash matches.
    assert body["config_version"] == content_version(write_config(config, "again.json").read_bytes())
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


# ---------------------------------------------------------------------------------------------
# Upstream failures


async def test_unreachable_upstream_is_502(gateway_app):
    port = free_port()
    async with gateway_app(
        {"targets": {"gpt": {"url": f"http://127.0.0.1:{port}/v1", "onwards_key": "sk-up"}}}
    ) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 502
    assert r.content == errors.UPSTREAM_UNREACHABLE
    assert str(port) not in r.text


@pytest.mark.parametrize(("refusals", "status", "upstream_calls"), [(2, 200, 1), (3, 502, 0)])
async def test_a_connection_that_cannot_be_opened_is_tried_twice_more(
    gateway_app, mock_a, monkeypatch, refusals, status, upstream_calls
):
    async with gateway_app(single(mock_a)) as client:
        session = client.gateway.session
        real = session.request
        refused: list[float] = []

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if len(refused) < refusals:
                refused.append(time.monotonic())
                key = types.SimpleNamespace(host="127.0.0.1", port=1, ssl=None)
                raise aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))
            return real(*args, **kwargs)

        monkeypatch.setattr(session, "request", flaky)
        r = await client.post(CHAT, json=chat())
    assert r.status_code == status, r.text
    assert mock_a.request_count == upstream_calls
    assert len(refused) == min(refusals, 3)  # the first try and two more, never a fourth
    assert refused[1] - refused[0] >= 0.02  # with a pause, not in a tight loop


async def test_request_timeout_is_504_and_covers_only_the_headers(gateway_app, mock_a):
    async with gateway_app(single(mock_a, request_timeout_secs=0.3)) as client:
        started = time.monotonic()
        slow = await client.post(CHAT, json=chat(), headers={"x-mock-delay": "3"})
        waited = time.monotonic() - started
        # A stream longer than the timeout is fine once its headers came in time.
        stream = await client.post(
            CHAT, json=chat(stream=True), headers={"x-mock-chunks": "3", "x-mock-chunk-delay": "0.2"}
        )
    assert slow.status_code == 504
    assert slow.content == errors.GATEWAY_TIMEOUT
    assert waited < 2.0
    assert stream.status_code == 200
    assert sse_data(stream.content)[-1] == "[DONE]"


# ---------------------------------------------------------------------------------------------
# Pools and fallback


def two_providers(first: str, second: str, **fallback: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "strategy": "priority",
        "providers": [
            {"url": first, "onwards_key": "sk-first-secret"},
            {"url": second, "onwards_key": "sk-second-secret"},
        ],
    }
    if fallback:
        spec["fallback"] = fallback
    return {"targets": {"gpt": spec}}


async def test_priority_failover_on_status(gateway_app, mock_a, mock_b):
    mock_a.status = 503
    async with gateway_app(two_providers(mock_a.url, mock_b.url, enabled=True, on_status=[5])) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 200, r.text
    assert r.headers["x-mock-name"] == "b"
    assert (mock_a.request_count, mock_b.request_count) == (1, 1)
    # The second attempt sends the same body with its own provider's credential.
    assert mock_b.requests[0].body == mock_a.requests[0].body
    assert mock_b.requests[0].headers["authorization"] == "Bearer sk-second-secret"


async def test_failover_on_connection_error(gateway_app, mock_b):
    closed = f"http://127.0.0.1:{free_port()}"
    async with gateway_app(two_providers(closed, mock_b.url, enabled=True)) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 200, r.text
    assert r.headers["x-mock-name"] == "b"


async def test_failover_on_timeout(gateway_app, mock_a, mock_b):
    config = two_providers(mock_a.url, mock_b.url, enabled=True)
    config["targets"]["gpt"]["providers"][0]["request_timeout_secs"] = 0.2
    mock_a.delay = 2
    async with gateway_app(config) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 200, r.text
    assert r.headers["x-mock-name"] == "b"


async def test_disabled_fallback_returns_the_upstream_error_as_is(gateway_app, mock_a, mock_b):
    mock_a.status = 500
    async with gateway_app(two_providers(mock_a.url, mock_b.url, enabled=False, on_status=[5])) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "mock upstream a answered 500 as instructed"
    assert r.headers["x-mock-name"] == "a"
    assert mock_b.request_count == 0


async def test_status_outside_on_status_is_returned_as_is(gateway_app, mock_a, mock_b):
    mock_a.status = 500
    async with gateway_app(
        two_providers(mock_a.url, mock_b.url, enabled=True, on_status=[429, 502])
    ) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 500
    assert r.headers["x-mock-name"] == "a"
    assert mock_b.request_count == 0


async def test_all_providers_failing_is_a_502_that_names_no_provider(gateway_app, mock_a, mock_b):
    mock_a.status = 503
    mock_b.status = 500
    async with gateway_app(two_providers(mock_a.url, mock_b.url, enabled=True, on_status=[5])) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 502
    assert r.content == errors.UPSTREAM_UNREACHABLE
    leaked = r.text + json.dumps(dict(r.headers))
    for secret in (
        mock_a.url,
        mock_b.url,
        str(mock_a.port),
        str(mock_b.port),
        "sk-first",
        "sk-second",
        "mock",
    ):
        assert secret not in leaked
    assert (mock_a.request_count, mock_b.request_count) == (1, 1)


async def test_max_attempts_makes_passes_over_the_pool(gateway_app, mock_a, mock_b):
    mock_a.status = 500
    mock_b.status = 500
    config = two_providers(mock_a.url, mock_b.url, enabled=True, on_status=[500], max_attempts=5)
    async with gateway_app(config) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 502
    arrivals = sorted(
        [(q.received_at, "a") for q in mock_a.requests] + [(q.received_at, "b") for q in mock_b.requests]
    )
    assert [name for _, name in arrivals] == ["a", "b", "a", "b", "a"]


async def test_failover_stops_at_the_first_success(gateway_app, mock_a, mock_b):
    mock_a.fail_next(1, 503)
    mock_b.status = 500
    config = two_providers(mock_a.url, mock_b.url, enabled=True, on_status=[5], max_attempts=4)
    async with gateway_app(config) as client:
        r = await client.post(CHAT, json=chat())
    # a fails, b fails, a (second pass) answers: the fourth attempt is never made.
    assert r.status_code == 200
    assert r.headers["x-mock-name"] == "a"
    assert (mock_a.request_count, mock_b.request_count) == (2, 1)


# ---------------------------------------------------------------------------------------------
# Request ids


async def test_request_id_is_echoed_and_forwarded(gateway_app, mock_a):
    async with gateway_app(single(mock_a)) as client:
        given = await client.post(CHAT, json=chat(), headers={"x-request-id": "req-abc_123"})
        generated = await client.post(CHAT, json=chat())
        invalid = await client.post(CHAT, json=chat(), headers={"x-request-id": "has space"})
        too_long = await client.post(CHAT, json=chat(), headers={"x-request-id": "x" * 129})
    assert given.headers["x-request-id"] == "req-abc_123"
    assert mock_a.requests[0].headers["x-request-id"] == "req-abc_123"
    for i, r in enumerate((generated, invalid, too_long), start=1):
        rid = r.headers["x-request-id"]
        assert len(rid) == 32 and int(rid, 16) >= 0
        assert mock_a.requests[i].headers["x-request-id"] == rid
    assert len({generated.headers["x-request-id"], invalid.headers["x-request-id"]}) == 2


async def test_request_id_on_gateway_errors(gateway_app, mock_a):
    async with gateway_app(single(mock_a)) as client:
        r = await client.post(CHAT, json=chat(model="nope"), headers={"x-request-id": "req-404"})
    assert r.headers["x-request-id"] == "req-404"


# ---------------------------------------------------------------------------------------------
# sanitize_response


async def test_sanitized_chat_completion(gateway_app, mock_a):
    async with gateway_app(single(mock_a, sanitize_response=True, onwards_model="upstream-model")) as client:
        r = await client.post(CHAT, json=chat(), headers={"accept-encoding": "gzip, br"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "gpt"
    assert EXTRA_FIELD not in body
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello from a"}
    assert int(r.headers["content-length"]) == len(r.content)
    # The sanitizer must read plain bytes: the upstream is asked not to compress.
    assert mock_a.requests[0].headers["accept-encoding"] == "identity"


async def test_unsanitized_response_keeps_extra_fields_and_accept_encoding(gateway_app, mock_a):
    async with gateway_app(single(mock_a)) as client:
        r = await client.post(CHAT, json=chat(), headers={"accept-encoding": "gzip, br"})
    assert EXTRA_FIELD in r.json()
    assert mock_a.requests[0].headers["accept-encoding"] == "gzip, br"


async def test_sanitized_stream(gateway_app, mock_a):
    config = {
        "targets": {
            "gpt": {
                "sanitize_response": True,
                "providers": [{"url": mock_a.url, "onwards_model": "upstream-model"}],
            }
        }
    }
    async with gateway_app(config) as client:
        r = await client.post(CHAT, json=chat(stream=True), headers={"x-mock-chunks": "4"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r.content)
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    assert len(chunks) == 4
    for chunk in chunks:
        assert chunk["model"] == "gpt"
        assert EXTRA_FIELD not in chunk
        assert chunk["object"] == "chat.completion.chunk"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "hello from a"


async def test_unsanitized_stream_passes_through(gateway_app, mock_a):
    async with gateway_app(single(mock_a, onwards_model="upstream-model")) as client:
        r = await client.post(CHAT, json=chat(stream=True))
    chunks = [orjson.loads(d) for d in sse_data(r.content)[:-1]]
    assert chunks and all(c["model"] == "upstream-model" and EXTRA_FIELD in c for c in chunks)


@pytest.mark.parametrize(
    ("status", "code"), [(400, "upstream_error"), (429, "upstream_error"), (503, "internal_error")]
)
async def test_sanitized_upstream_errors_keep_status_and_hide_the_body(gateway_app, mock_a, status, code):
    async with gateway_app(single(mock_a, sanitize_response=True)) as client:
        r = await client.post(CHAT, json=chat(), headers={"x-mock-status": str(status)})
    assert r.status_code == status
    assert r.content == sanitize.sanitized_error_body(status)
    assert error_code(r) == code
    assert "mock" not in r.text
    assert r.headers["content-type"] == "application/json"
    assert "x-mock-name" not in r.headers  # upstream headers could name the provider


async def test_sanitize_leaves_other_endpoints_alone(gateway_app, mock_a):
    async with gateway_app(single(mock_a, sanitize_response=True)) as client:
        r = await client.post("/v1/embeddings", json={"model": "gpt", "input": "hi"})
    assert r.status_code == 200
    assert EXTRA_FIELD in r.json()


async def test_a_slow_answer_keeps_renewing_its_permit_past_the_lease_ttl(gateway_app, mock_a) -> None:
    # A renewal interval above the disconnect-watch delay: the renewal is scheduled by the watch,
    # not at admission (see _Exchange._schedule_renew).
    config = single(mock_a, concurrency_limit={"max_concurrent_requests": 1})
    config["limits"] = {"lease_ttl_ms": 2400, "renew_interval_ms": 700}
    async with gateway_app(config) as client:
        slow = asyncio.create_task(client.post(CHAT, json=chat(), headers={"x-mock-delay": "3.8"}))
        await asyncio.sleep(3.0)  # past the lease ttl: only renewals can still hold the permit
        refused = await client.post(CHAT, json=chat())
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert (await slow).status_code == 200
        assert (await client.post(CHAT, json=chat())).status_code == 200
