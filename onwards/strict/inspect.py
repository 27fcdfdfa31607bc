"""Strict mode's look inside an upstream 2xx before it is committed to the client.

Some providers answer 200 and put the failure in the body: `{"error":{"code":429}}` as the
whole JSON answer, or as the first event of an SSE stream. Others answer 200 with nothing.
Before a byte goes to the client, strict mode reads the unary body, or peeks at the start of a
stream (up to PEEK_EVENTS events within PEEK_SECS, skipping comments and keep-alives), and
decides:

- clean: serve it (the peeked bytes are put back in front of the rest of the stream);
- an embedded error status E: the next provider is tried when `fallback.on_status` matches E
  (or E is 429 and `on_rate_limit` is set); otherwise, and when the attempts run out, the
  client gets 503 `service_unavailable` (E of 429 or 5xx) or E with `upstream_error` (4xx);
- empty (no body, or a stream that ends before any data): treated as a 502 from the
  provider: retried when `on_status` matches 502, else 503.

A peek that times out serves the stream as it is: a slow first token is not an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson

from onwards.config.model import FallbackSpec
from onwards.errors import GatewayError
from onwards.proxy.upstream import UpstreamContent, UpstreamHeaders, UpstreamResponse
from onwards.strict.errors import (
    SERVICE_UNAVAILABLE,
    UPSTREAM_REJECTED,
    classify_sse_event,
    embedded_error_status,
)

PEEK_EVENTS = 4
PEEK_SECS = 2.0


class Retry(Exception):
    """This provider's 2xx hides a failure the target falls back on; `error` is what the client
    gets if no provider is left."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(str(error))
        self.error = error


def _unavailable(log: str) -> GatewayError:
    return GatewayError(503, SERVICE_UNAVAILABLE, log=log)


def _verdict(status: int, fallback: FallbackSpec, label: str) -> GatewayError:
    """Raise Retry when the embedded `status` is one to fall back on; else the final error."""
    log = f"{label} answered 2xx with an embedded {status}"
    retry = fallback.matches(status) or (status == 429 and fallback.enabled and fallback.on_rate_limit)
    if retry:
        raise Retry(_unavailable(log))
    if status == 429 or status >= 500:
        return _unavailable(log)
    return GatewayError(status, UPSTREAM_REJECTED, log=log)


def _empty(fallback: FallbackSpec, label: str) -> GatewayError:
    error = _unavailable(f"{label} answered 2xx with no data")
    if fallback.matches(502):
        raise Retry(error)
    return error


async def inspect_unary(response: UpstreamResponse, fallback: FallbackSpec, label: str) -> bytes:
    """The whole 2xx body when it is clean; raises Retry or the client's GatewayError."""
    body = await response.read()
    if not body.strip():
        raise _empty(fallback, label)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # not an error envelope; the success sanitizer decides what it is
    status = embedded_error_status(value)
    if status is not None:
        raise _verdict(status, fallback, label)
    return body


async def inspect_stream(response: UpstreamResponse, fallback: FallbackSpec, label: str) -> UpstreamResponse:
    """`response` with its first events read and put back, when the stream starts clean;
    raises Retry or the client's GatewayError otherwise."""
    content = response.content
    buffered = bytearray()
    scanned = 0  # bytes of `buffered` already cut into events
    events = 0
    ended = False
    try:
        async with asyncio.timeout(PEEK_SECS):
            while events < PEEK_EVENTS:
                chunk = await content.readany()
                if not chunk:
                    ended = True
                    break
                buffered += chunk
                while events < PEEK_EVENTS:
                    end = _event_end(buffered, scanned)
                    if end < 0:
                        break
                    kind, status = classify_sse_event(bytes(buffered[scanned:end]))
                    scanned = end
                    events += 1
                    if kind == "error":
                        assert status is not None
                        raise _verdict(status, fallback, label)
                    if kind == "data":
                        return Prefixed(response, bytes(buffered))
    except TimeoutError:
        return Prefixed(response, bytes(buffered))
    if ended:
        if scanned < len(buffered):
            # A last event without its blank line still counts.
            kind, status = classify_sse_event(bytes(buffered[scanned:]))
            if kind == "error":
                assert status is not None
                raise _verdict(status, fallback, label)
            if kind == "data":
                return Prefixed(response, bytes(buffered))
        raise _empty(fallback, label)
    # Only comments so far, but the stream is alive: serve it as it is.
    return Prefixed(response, bytes(buffered))


def _event_end(buf: bytearray, start: int) -> int:
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\r\n\r\n", start)
    if lf < 0 and crlf < 0:
        return -1
    if crlf < 0 or (0 <= lf < crlf):
        return lf + 2
    return crlf + 4


class _PrefixedContent:
    __slots__ = ("_inner", "_prefix")

    def __init__(self, inner: UpstreamContent, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def readany(self) -> bytes:
        if self._prefix:
            prefix, self._prefix = self._prefix, b""
            return prefix
        return await self._inner.readany()


class Prefixed:
    """An UpstreamResponse whose first body bytes were already read (and are given back first)."""

    __slots__ = ("_content", "_inner")

    def __init__(self, inner: UpstreamResponse, prefix: bytes) -> None:
        self._inner = inner
        self._content = _PrefixedContent(inner.content, prefix)

    @property
    def status(self) -> int:
        return self._inner.status

    @property
    def raw_headers(self) -> Iterable[tuple[bytes, bytes]]:
        return self._inner.raw_headers

    @property
    def headers(self) -> UpstreamHeaders:
        return self._inner.headers

    @property
    def content_length(self) -> int | None:
        return None  # a peeked stream is always sent as a stream

    @property
    def content(self) -> UpstreamContent:
        return self._content

    async def read(self) -> bytes:
        parts = []
        while chunk := await self._content.readany():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> Any:
        return self._inner.release()
