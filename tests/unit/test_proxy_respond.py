"""The responder serves any UpstreamResponse (not only aiohttp's), and gives the permits back
before the last byte in every shape: known length, stream, whole."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from onwards.limits.base import Lease
from onwards.proxy.exchange import Exchange, Outcome
from onwards.proxy.metering import Meter
from onwards.proxy.permits import Permits
from onwards.proxy.respond import respond
from onwards.proxy.watch import DisconnectWatch
from tests.unit.test_proxy_permits import FakeLimiter

LEASE = Lease("L1", ("key:k",), 30_000)


class Content:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


class InProcessResponse:
    """An upstream answer that never touched a socket, as an in-process provider would return."""

    def __init__(self, status: int, content_type: str, chunks: list[bytes], known_length: bool) -> None:
        self.status = status
        self.raw_headers = ((b"Content-Type", content_type.encode()), (b"Transfer-Encoding", b"chunked"))
        self.headers = {"Content-Type": content_type}
        self.content_length = sum(map(len, chunks)) if known_length else None
        self.content = Content(chunks)
        self.released = False

    async def read(self) -> bytes:
        return b"".join(self.content.chunks)

    def release(self) -> None:
        self.released = True


class Metrics:
    def __init__(self) -> None:
        self.streamed: list[tuple[str, int, int]] = []

    def streamed_(self, label: str, nbytes: int, events: int) -> None:
        self.streamed.append((label, nbytes, events))

    def upstream_error(self, label: str, kind: str) -> None:
        raise AssertionError(f"unexpected upstream error {kind}")


class Client:
    """The ASGI send side; notes, for the final body message, whether the permit was already back."""

    def __init__(self, limiter: FakeLimiter) -> None:
        self.limiter = limiter
        self.messages: list[dict[str, Any]] = []
        self.released_before_end: bool | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message["more_body"]:
            self.released_before_end = LEASE in self.limiter.written
        self.messages.append(message)


def exchange(path: str = "/v1/embeddings") -> tuple[Exchange, Client, Metrics]:
    limiter = FakeLimiter(queues=True)
    client = Client(limiter)
    metrics = Metrics()
    gw: Any = types.SimpleNamespace(
        metrics=types.SimpleNamespace(streamed=metrics.streamed_, upstream_error=metrics.upstream_error)
    )
    permits = Permits(limiter, lambda coro: coro.close(), 10.0)  # type: ignore[arg-type]
    permits.hold(LEASE)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    request: Any = types.SimpleNamespace(rid_header=(b"x-request-id", b"rid-1"), model="gpt", protocol=None)
    scope: Any = {"method": "POST", "path": path}
    watch = DisconnectWatch(receive, permits)
    ex = Exchange(gw, scope, client.send, request, Outcome(), permits, watch, Meter(limited=False))
    return ex, client, metrics


def plan(sanitize: bool = False) -> Any:
    return types.SimpleNamespace(
        overridden=frozenset({b"x-pool"}),
        response_headers=((b"x-pool", b"1"),),
        sanitize=sanitize,
        label="gpt/0",
    )


def headers_of(client: Client) -> dict[bytes, bytes]:
    return dict(client.messages[0]["headers"])


def body_of(client: Client) -> bytes:
    return b"".join(m["body"] for m in client.messages[1:])


async def test_a_known_length_answer_is_relayed_with_its_length_and_the_permit_back_first() -> None:
    ex, client, metrics = exchange()
    status = await respond(ex, plan(), InProcessResponse(200, "application/json", [b'{"a":', b"1}"], True))
    ex.watch.stop()
    assert status == 200
    headers = headers_of(client)
    assert (
        headers[b"content-length"] == b"7"
        and headers[b"x-pool"] == b"1"
        and b"transfer-encoding" not in headers
    )
    assert headers[b"x-request-id"] == b"rid-1"
    assert body_of(client) == b'{"a":1}'
    assert client.released_before_end is True
    assert metrics.streamed == [("gpt/0", 7, 0)] and ex.outcome.bytes_out == 7


async def test_a_stream_starts_the_watch_and_gives_the_permit_back_before_its_end() -> None:
    ex, client, metrics = exchange("/v1/chat/completions")
    events = [b"data: {}\n\n", b"data: [DONE]\n\n"]
    status = await respond(ex, plan(), InProcessResponse(200, "text/event-stream", events, False))
    assert ex.watch.task is not None  # watching from the first byte
    ex.watch.stop()
    assert status == 200
    assert b"content-length" not in headers_of(client)
    assert body_of(client) == b"".join(events)
    assert client.released_before_end is True
    assert metrics.streamed == [("gpt/0", 24, 2)] and ex.outcome.bytes_out == 24


async def test_a_sanitized_error_carries_no_upstream_header_and_the_permit_back_first() -> None:
    ex, client, _ = exchange("/v1/chat/completions")
    status = await respond(
        ex, plan(sanitize=True), InProcessResponse(503, "text/plain", [b"provider x down"], True)
    )
    ex.watch.stop()
    assert status == 503
    assert set(headers_of(client)) == {b"x-request-id", b"content-type", b"content-length"}
    assert b"provider x" not in body_of(client)
    assert client.released_before_end is True
