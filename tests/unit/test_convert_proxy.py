"""The proxy's converted responder (onwards/proxy/converted.py) over in-process upstream answers:
converted whole, streamed and error bodies, a stream that breaks, and the permit back before the end."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import aiohttp
import orjson
import pytest

from onwards.convert.adapters import CHAT_OVER_MESSAGES, MESSAGES_OVER_CHAT
from onwards.convert.sse import SseReader
from onwards.errors import GatewayError
from onwards.proxy import converted
from onwards.proxy.exchange import Exchange, Outcome
from onwards.proxy.metering import Meter
from onwards.proxy.permits import Permits
from onwards.proxy.watch import DisconnectWatch
from tests.unit.test_proxy_permits import FakeLimiter
from tests.unit.test_proxy_respond import LEASE, Client, InProcessResponse

CHUNKS = [
    b'data: {"id":"c1","model":"up","choices":[{"delta":{"role":"assistant","content":"Hi"}}]}\n\n',
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}\n\ndata: [DONE]\n\n',
]


class Broken:
    """Upstream content that delivers one chunk, then the connection breaks."""

    def __init__(self) -> None:
        self.sent = False

    async def readany(self) -> bytes:
        if not self.sent:
            self.sent = True
            return CHUNKS[0]
        raise aiohttp.ClientPayloadError("connection reset")


def _exchange(decoded: dict[str, Any]) -> tuple[Exchange, Client, list[str]]:
    limiter = FakeLimiter(queues=True)
    client = Client(limiter)
    errors: list[str] = []
    metrics = types.SimpleNamespace(
        streamed=lambda *a: None,
        upstream_error=lambda label, kind: errors.append(kind),
        tokens_used=lambda *a: None,
    )
    gw: Any = types.SimpleNamespace(metrics=metrics)
    permits = Permits(limiter, lambda coro: coro.close(), 10.0)  # type: ignore[arg-type]
    permits.hold(LEASE)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    request: Any = types.SimpleNamespace(
        rid_header=(b"x-request-id", b"rid-1"),
        model="alias",
        decoded=decoded,
        body=orjson.dumps(decoded),
        keydef=None,
    )
    scope: Any = {"method": "POST", "path": "/v1/messages"}
    watch = DisconnectWatch(receive, permits)
    ex = Exchange(gw, scope, client.send, request, Outcome(), permits, watch, Meter(limited=False))
    return ex, client, errors


def _plan(sanitize: bool = False) -> Any:
    return types.SimpleNamespace(
        overridden=frozenset(), response_headers=(), sanitize=sanitize, label="gpt/0"
    )


def _events(client: Client) -> list[tuple[str, dict[str, Any]]]:
    reader = SseReader()
    raw = b"".join(m["body"] for m in client.messages[1:])
    return [(e.event, orjson.loads(e.data)) for e in reader.feed(raw) + reader.close()]


async def test_stream_is_translated_with_the_permit_back_before_the_end() -> None:
    ex, client, _ = _exchange({"stream": True})
    status = await converted.respond(
        ex, _plan(), InProcessResponse(200, "text/event-stream", CHUNKS, False), MESSAGES_OVER_CHAT
    )
    ex.watch.stop()
    assert status == 200 and client.released_before_end is True
    headers = dict(client.messages[0]["headers"])
    assert headers[b"content-type"] == b"text/event-stream" and headers[b"x-request-id"] == b"rid-1"
    names = [name for name, _ in _events(client)]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert ex.outcome.bytes_out == sum(len(m["body"]) for m in client.messages[1:])


async def test_a_broken_stream_ends_with_an_error_event() -> None:
    ex, client, errors = _exchange({"stream": True})
    response = InProcessResponse(200, "text/event-stream", [], False)
    response.content = Broken()  # type: ignore[assignment]
    await converted.respond(ex, _plan(), response, MESSAGES_OVER_CHAT)
    ex.watch.stop()
    events = _events(client)
    assert events[-1][0] == "error" and "ended before" in events[-1][1]["error"]["message"]
    assert errors == ["reset"] and "stream broke" in ex.outcome.error


async def test_whole_answer_is_converted_with_its_length() -> None:
    ex, client, _ = _exchange({})
    reply = (
        b'{"id":"msg_1","model":"claude","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn"}'
    )
    await converted.respond(
        ex, _plan(), InProcessResponse(200, "application/json", [reply], True), CHAT_OVER_MESSAGES
    )
    headers = dict(client.messages[0]["headers"])
    body = b"".join(m["body"] for m in client.messages[1:])
    assert (
        headers[b"content-length"] == str(len(body)).encode()
        and headers[b"content-type"] == b"application/json"
    )
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "Hi"
    assert client.released_before_end is True


async def test_upstream_error_keeps_status_and_headers_in_the_client_shape() -> None:
    ex, client, _ = _exchange({})
    response = InProcessResponse(
        429, "application/json", [b'{"error":{"message":"slow down","type":"x"}}'], True
    )
    response.raw_headers = (*response.raw_headers, (b"retry-after", b"3"))
    status = await converted.respond(ex, _plan(), response, MESSAGES_OVER_CHAT)
    headers = client.messages[0]["headers"]
    assert status == 429 and (b"retry-after", b"3") in headers
    assert [v for k, v in headers if k == b"content-type"] == [b"application/json"]
    body = orjson.loads(b"".join(m["body"] for m in client.messages[1:]))
    assert body == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}


async def test_sanitized_error_is_generic_in_the_client_shape() -> None:
    ex, client, _ = _exchange({})
    response = InProcessResponse(
        500, "application/json", [b'{"error":{"message":"provider internals"}}'], True
    )
    response.raw_headers = (*response.raw_headers, (b"x-provider", b"secret"))
    await converted.respond(ex, _plan(sanitize=True), response, MESSAGES_OVER_CHAT)
    headers = dict(client.messages[0]["headers"])
    assert b"x-provider" not in headers
    body = orjson.loads(b"".join(m["body"] for m in client.messages[1:]))
    assert body["type"] == "error" and "internals" not in body["error"]["message"]


async def test_unreadable_answer_is_a_502() -> None:
    ex, client, _ = _exchange({})
    with pytest.raises(GatewayError) as caught:
        await converted.respond(
            ex, _plan(), InProcessResponse(200, "application/json", [b"<html>"], True), MESSAGES_OVER_CHAT
        )
    assert caught.value.status == 502 and client.messages == []


def test_client_error_takes_the_anthropic_shape_only_for_anthropic_clients() -> None:
    exc = GatewayError(
        404, b'{"error":{"message":"no such model","type":"invalid_request_error"}}', ((b"a", b"b"),)
    )
    assert converted.client_error(exc, None) is exc and converted.client_error(exc, "openai") is exc
    shaped = converted.client_error(exc, "anthropic")
    assert shaped.status == 404 and shaped.headers == exc.headers
    assert orjson.loads(shaped.body) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }


async def test_a_whole_answer_to_a_stream_request_is_replayed_as_a_stream() -> None:
    ex, client, _ = _exchange({"stream": True})
    reply = b'{"id":"c1","model":"up","choices":[{"message":{"content":"Hi"},"finish_reason":"stop"}]}'
    await converted.respond(
        ex, _plan(), InProcessResponse(200, "application/json", [reply], True), MESSAGES_OVER_CHAT
    )
    assert dict(client.messages[0]["headers"])[b"content-type"] == b"text/event-stream"
    events = _events(client)
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    assert any(p.get("delta", {}).get("text") == "Hi" for _, p in events)


async def test_usage_of_a_whole_stream_is_counted_and_a_broken_one_is_not() -> None:
    ex, _, _ = _exchange({"stream": True})
    await converted.respond(
        ex, _plan(), InProcessResponse(200, "text/event-stream", CHUNKS, False), MESSAGES_OVER_CHAT
    )
    ex.watch.stop()
    assert (ex.outcome.prompt_tokens, ex.outcome.completion_tokens) == (9, 2) and ex.permits.used == 11
    broken, _, _ = _exchange({"stream": True})
    response = InProcessResponse(200, "text/event-stream", [], False)
    response.content = Broken()  # type: ignore[assignment]
    await converted.respond(broken, _plan(), response, MESSAGES_OVER_CHAT)
    broken.watch.stop()
    assert broken.meter.usage is None


async def test_usage_of_a_whole_answer_is_counted_from_the_provider_body() -> None:
    ex, _, _ = _exchange({})
    reply = (
        b'{"id":"msg_1","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":4,"output_tokens":3}}'
    )
    await converted.respond(
        ex, _plan(), InProcessResponse(200, "application/json", [reply], True), CHAT_OVER_MESSAGES
    )
    assert (ex.outcome.prompt_tokens, ex.outcome.completion_tokens) == (4, 3)
