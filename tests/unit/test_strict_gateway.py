"""Strict mode through the whole app, against mock upstreams that misbehave: named after the
Rust onwards' strict router, strict handler and lib.rs embedded-error tests."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from onwards import errors
from onwards.config import FallbackSpec
from onwards.strict import inspect
from tests.support.app_client import app_client
from tests.support.mock_upstream import EXTRA_FIELD, Canned, MockUpstream

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
LEAK = b'{"error":{"message":"db at 10.0.0.3 failed: stack trace ...","type":"x","code":"internal"}}'


@pytest.fixture
def mock_a(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("a")


@pytest.fixture
def mock_b(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("b")


def strict(targets: dict[str, Any]) -> dict[str, Any]:
    return {"strict_mode": True, "targets": targets}


def pool(*mocks: MockUpstream, on_status: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "strategy": "priority",
        "providers": [{"url": m.url + "/v1"} for m in mocks],
        **extra,
    }
    if on_status is not None:
        spec["fallback"] = {"enabled": True, "on_status": on_status}
    return spec


def chunk(content: str) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "up",
                "choices": [{"index": 0, "delta": {"content": content}}],
            }
        )
        + b"\n\n"
    )


SSE = "text/event-stream"


async def test_unknown_path_returns_404_and_nothing_is_forwarded(write_config, mock_a):
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        for path in ("/v1/files", "/chat/completions", "/v1/audio/speech"):
            r = await client.post(path, json=BODY)
            assert r.status_code == 404, path
    assert mock_a.request_count == 0


async def test_models_route_is_served_and_wrong_method_is_405(write_config, mock_a):
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        models = await client.get("/v1/models")
        wrong = await client.get(CHAT)
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["gpt"]
    assert wrong.status_code == 405
    assert mock_a.request_count == 0


async def test_chat_is_forwarded_as_sent_to_the_path_without_v1(write_config, mock_a):
    raw = b'{"model":"gpt",  "messages":[{"role":"user","content":"hi","x-extra":1}], "provider_hint": 2}'
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post(
            CHAT + "?q=1", content=raw, headers={"content-type": "text/plain", "accept-encoding": "gzip"}
        )
    assert r.status_code == 200, r.text
    [seen] = mock_a.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.body == raw
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["accept-encoding"] == "identity"


async def test_messages_routes_to_chat(write_config, mock_a):
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post("/v1/messages", json=BODY)
    assert r.status_code == 200
    assert mock_a.requests[0].path == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"messages": []}', 422),
        (b'{"model": "gpt"}', 422),
        (b'{"model": "gpt", "messages": 3}', 422),
    ],
)
async def test_invalid_requests_are_refused_before_any_upstream_call(write_config, mock_a, body, status):
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post(CHAT, content=body)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] is None
    assert error["message"].startswith("Invalid request: ")
    assert mock_a.request_count == 0


async def test_completions_missing_model_is_422_and_prompt_optional(write_config, mock_a):
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        missing = await client.post("/v1/completions", json={"prompt": "x"})
        ok = await client.post("/v1/completions", json={"model": "gpt"})
    assert missing.status_code == 422
    assert ok.status_code == 200, ok.text
    assert mock_a.requests[0].path == "/v1/completions"
    assert ok.json()["object"] == "text_completion"


async def test_chat_success_strips_unknown_fields_and_rewrites_model(write_config, mock_a):
    config = strict({"gpt": {"url": mock_a.url + "/v1", "onwards_model": "upstream-name"}})
    async with app_client(write_config(config)) as client:
        r = await client.post(CHAT, json=BODY)
    assert r.status_code == 200
    body = r.json()
    assert EXTRA_FIELD not in body
    assert body["model"] == "gpt"
    assert int(r.headers["content-length"]) == len(r.content)


async def test_streaming_chat_is_sanitized(write_config, mock_a):
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post(CHAT, json={**BODY, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(SSE)
    datas = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in datas[:-1]]
    assert chunks and all(c["model"] == "gpt" and EXTRA_FIELD not in c for c in chunks)


async def test_embeddings_success_is_sanitized(write_config, mock_a):
    async with app_client(write_config(strict({"emb": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post("/v1/embeddings", json={"model": "emb", "input": "hello"})
    assert r.status_code == 200, r.text
    assert EXTRA_FIELD not in r.json()
    assert r.json()["model"] == "emb"


async def test_malformed_success_body_is_502_never_passed_through(write_config, mock_a):
    mock_a.answer_next(Canned(200, b'{"choices": "nope", "secret": "x"}'))
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post(CHAT, json=BODY)
    assert r.status_code == 502
    assert r.json() == {"error": {"message": "Bad gateway", "type": "api_error", "param": None, "code": None}}


@pytest.mark.parametrize(
    ("upstream", "status", "message"),
    [
        (400, 400, "Invalid request"),
        (500, 500, "Internal server error"),
        (402, 502, "Bad gateway"),
        (401, 502, "Bad gateway"),
        (403, 502, "Bad gateway"),
        (451, 502, "Bad gateway"),
        (408, 504, "Gateway timeout"),
        (429, 429, "Rate limit exceeded"),
    ],
)
async def test_untrusted_errors_are_standardized_and_masked(write_config, mock_a, upstream, status, message):
    mock_a.answer_next(Canned(upstream, LEAK))
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post(CHAT, json=BODY)
    assert r.status_code == status
    assert r.json()["error"]["message"] == message
    assert r.json()["error"]["code"] is None
    assert b"10.0.0.3" not in r.content
    assert "x-mock-name" not in r.headers


async def test_html_error_body_becomes_clean_json(write_config, mock_a):
    mock_a.answer_next(Canned(500, b"<html>Traceback ...</html>", content_type="text/html"))
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post(CHAT, json=BODY)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["type"] == "api_error"


@pytest.mark.parametrize("where", ["pool", "provider"])
async def test_trusted_errors_pass_through_verbatim(write_config, mock_a, where):
    mock_a.answer_next(Canned(402, LEAK))
    provider: dict[str, Any] = {"url": mock_a.url + "/v1"}
    spec: dict[str, Any] = {"providers": [provider]}
    if where == "pool":
        spec["trusted"] = True
    else:
        provider["trusted"] = True
    async with app_client(write_config(strict({"gpt": spec}))) as client:
        r = await client.post(CHAT, json=BODY)
    assert r.status_code == 402
    assert r.content == LEAK


async def test_provider_trusted_false_overrides_trusted_pool(write_config, mock_a):
    mock_a.answer_next(Canned(429, LEAK))
    spec = {"trusted": True, "providers": [{"url": mock_a.url + "/v1", "trusted": False}]}
    async with app_client(write_config(strict({"gpt": spec}))) as client:
        r = await client.post(CHAT, json=BODY)
    assert r.status_code == 429
    assert r.json()["error"]["message"] == "Rate limit exceeded"


async def test_trusted_success_is_still_sanitized(write_config, mock_a):
    async with app_client(
        write_config(strict({"gpt": {"url": mock_a.url + "/v1", "trusted": True}}))
    ) as client:
        r = await client.post(CHAT, json=BODY)
    assert EXTRA_FIELD not in r.json()


async def test_model_override_to_an_untrusted_alias_cannot_bypass_sanitization(write_config, mock_a):
    mock_a.answer_next(Canned(500, LEAK))
    config = strict(
        {"trusted": {"url": mock_a.url + "/v1", "trusted": True}, "untrusted": {"url": mock_a.url + "/v1"}}
    )
    async with app_client(write_config(config)) as client:
        r = await client.post(
            CHAT, json={**BODY, "model": "trusted"}, headers={"model-override": "untrusted"}
        )
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "Internal server error"


async def test_gateway_errors_are_not_standardized(write_config, mock_a):
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        r = await client.post(CHAT, json={**BODY, "model": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


async def test_unary_embedded_error_collapses_to_503_after_both_providers(write_config, mock_a, mock_b):
    for mock in (mock_a, mock_b):
        mock.answer_next(Canned(200, b'{"error":{"code":429,"message":"Provider returned error"}}'))
    async with app_client(write_config(strict({"gpt": pool(mock_a, mock_b, on_status=[429])}))) as client:
        r = await client.post(CHAT, json=BODY)
    assert r.status_code == 503
    assert r.content == errors.error_body(
        "An internal error occurred. Please try again later.", "internal_error", "service_unavailable"
    )
    assert (mock_a.request_count, mock_b.request_count) == (1, 1)


async def test_unary_embedded_error_without_fallback_is_503_and_4xx_is_upstream_error(write_config, mock_a):
    mock_a.answer_next(
        Canned(200, b'{"error":{"code":503}}'), Canned(200, b'{"id":"x","choices":[],"error":{"code":"404"}}')
    )
    async with app_client(write_config(strict({"gpt": {"url": mock_a.url + "/v1"}}))) as client:
        first = await client.post(CHAT, json=BODY)
        second = await client.post(CHAT, json=BODY)
    assert first.status_code == 503
    assert second.status_code == 404
    assert second.json()["error"]["code"] == "upstream_error"


async def test_streaming_embedded_error_retries_then_succeeds(write_config, mock_a, mock_b):
    mock_a.answer_next(Canned(200, [b'data: {"error":{"code":429,"message":"x"}}\n\n'], content_type=SSE))
    mock_b.answer_next(Canned(200, [chunk("hi"), b"data: [DONE]\n\n"], content_type=SSE))
    async with app_client(write_config(strict({"gpt": pool(mock_a, mock_b, on_status=[429])}))) as client:
        r = await client.post(CHAT, json={**BODY, "stream": True})
    assert r.status_code == 200
    assert '"content":"hi"' in r.text and '"model":"gpt"' in r.text
    assert (mock_a.request_count, mock_b.request_count) == (1, 1)


async def test_streaming_embedded_error_retries_then_exhausts_to_503(write_config, mock_a, mock_b):
    for mock in (mock_a, mock_b):
        mock.answer_next(Canned(200, [b'data: {"error":{"code":429}}\n\n'], content_type=SSE))
    async with app_client(write_config(strict({"gpt": pool(mock_a, mock_b, on_status=[429])}))) as client:
        r = await client.post(CHAT, json={**BODY, "stream": True})
    assert r.status_code == 503
    assert (mock_a.request_count, mock_b.request_count) == (1, 1)


async def test_streaming_keepalive_before_error_is_still_detected(write_config, mock_a, mock_b):
    for mock in (mock_a, mock_b):
        mock.answer_next(
            Canned(200, [b": keep-alive\n\n", b'data: {"error":{"code":429}}\n\n'], content_type=SSE)
        )
    async with app_client(write_config(strict({"gpt": pool(mock_a, mock_b, on_status=[429])}))) as client:
        r = await client.post(CHAT, json={**BODY, "stream": True})
    assert r.status_code == 503
    assert (mock_a.request_count, mock_b.request_count) == (1, 1)


async def test_streaming_empty_body_retries_then_succeeds(write_config, mock_a, mock_b):
    mock_a.answer_next(Canned(200, [b""], content_type=SSE))
    mock_b.answer_next(Canned(200, [chunk("hi"), b"data: [DONE]\n\n"], content_type=SSE))
    async with app_client(write_config(strict({"gpt": pool(mock_a, mock_b, on_status=[502])}))) as client:
        r = await client.post(CHAT, json={**BODY, "stream": True})
    assert r.status_code == 200
    assert '"content":"hi"' in r.text


async def test_streaming_empty_body_exhausts_to_503(write_config, mock_a, mock_b):
    for mock in (mock_a, mock_b):
        mock.answer_next(Canned(200, [b": only a comment\n\n"], content_type=SSE))
    async with app_client(write_config(strict({"gpt": pool(mock_a, mock_b, on_status=[502])}))) as client:
        r = await client.post(CHAT, json={**BODY, "stream": True})
    assert r.status_code == 503
    assert (mock_a.request_count, mock_b.request_count) == (1, 1)


async def test_unary_empty_body_retries_and_exhausts_to_503(write_config, mock_a, mock_b):
    for mock in (mock_a, mock_b):
        mock.answer_next(Canned(200, b""))
    async with app_client(write_config(strict({"gpt": pool(mock_a, mock_b, on_status=[502])}))) as client:
        r = await client.post(CHAT, json=BODY)
    assert r.status_code == 503
    assert (mock_a.request_count, mock_b.request_count) == (1, 1)


async def test_streaming_keepalive_then_token_is_forwarded_not_retried(write_config, mock_a, mock_b):
    mock_a.answer_next(
        Canned(200, [b": keep-alive\n\n", chunk("tok"), b"data: [DONE]\n\n"], content_type=SSE)
    )
    async with app_client(
        write_config(strict({"gpt": pool(mock_a, mock_b, on_status=[429, 502])}))
    ) as client:
        r = await client.post(CHAT, json={**BODY, "stream": True})
    assert r.status_code == 200
    assert '"content":"tok"' in r.text
    assert ": keep-alive" not in r.text
    assert mock_b.request_count == 0


class _StalledContent:
    """Sends some comments, then nothing, forever."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        await asyncio.get_running_loop().create_future()
        return b""


class _StalledResponse:
    status = 200
    raw_headers = ((b"content-type", b"text/event-stream"),)
    headers = {"Content-Type": "text/event-stream"}
    content_length = None

    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _StalledContent(chunks)

    async def read(self) -> bytes:
        raise AssertionError("a stream is never read whole")

    def release(self) -> None:
        pass


async def test_streaming_only_keepalives_so_far_is_forwarded_not_retried(monkeypatch):
    # A stream that is alive but has sent no data within the peek window is served as it is,
    # with what was peeked given back first. The window is shortened: the stream never sends data.
    monkeypatch.setattr(inspect, "PEEK_SECS", 0.05)
    response = _StalledResponse([b": keep-alive\n\n"] * 5)
    fallback = FallbackSpec(enabled=True, on_status=(429, 502))
    served = await inspect.inspect_stream(response, fallback, "gpt/0")  # type: ignore[arg-type]
    assert await served.content.readany() == b": keep-alive\n\n" * 4
    assert await served.content.readany() == b": keep-alive\n\n"
    stalled = _StalledResponse([b": ping\n\n", b": ping\n\n"])  # fewer events than the peek reads
    served = await inspect.inspect_stream(stalled, fallback, "gpt/0")  # type: ignore[arg-type]
    assert await served.content.readany() == b": ping\n\n: ping\n\n"


async def test_strict_mode_change_on_reload_needs_a_restart(write_config, mock_a, caplog):
    from onwards.config import parse_config

    async with app_client(write_config({"targets": {"gpt": {"url": mock_a.url + "/v1"}}})) as client:
        gateway = client.gateway  # type: ignore[attr-defined]
        gateway.apply(parse_config(strict({"gpt": {"url": mock_a.url + "/v1"}}), "config.json"))
        assert gateway.strict_mode is False
        r = await client.post("/chat/completions", json=BODY)  # still the non-strict router
    assert r.status_code == 200
    assert any(
        "strict_mode changed to true" in rec.getMessage() and "after a restart" in rec.getMessage()
        for rec in caplog.records
    )


async def test_sanitize_response_is_ignored_in_strict_mode(write_config, mock_a):
    # One sanitization only (strict's); a trusted error stays as sent even with the flag on.
    mock_a.answer_next(Canned(500, LEAK))
    spec = {"url": mock_a.url + "/v1", "trusted": True, "sanitize_response": True}
    async with app_client(write_config(strict({"gpt": spec}))) as client:
        error = await client.post(CHAT, json=BODY)
        ok = await client.post(CHAT, json=BODY)
    assert (error.status_code, error.content) == (500, LEAK)
    assert ok.status_code == 200 and EXTRA_FIELD not in ok.json()


async def test_strict_responses_through_the_adapter_steps_are_strict_chat_requests(write_config, mock_a):
    # The outer /v1/responses request is checked against the Responses schema; the adapter's
    # model steps (requests the gateway makes to itself) take the strict chat route.
    config = strict({"gpt": {"url": mock_a.url + "/v1", "open_responses": {"adapter": True}}})
    async with app_client(write_config(config)) as client:
        bad = await client.post("/v1/responses", json={"model": "gpt"})
        r = await client.post("/v1/responses", json={"model": "gpt", "input": "hello"})
    assert bad.status_code == 422
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "response"
    assert [seen.path for seen in mock_a.requests] == ["/v1/chat/completions"]
