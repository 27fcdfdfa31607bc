"""The responder: a provider's answer to the client, whole (sanitized), with a known length, or
streamed as it arrives (sanitized or not), and the gateway's own error answers.

Every way out gives the permits back before the last byte goes to the client
(`Permits.release_before_end`). A send that fails because the client left raises ClientGone.

Metering rides along: every response carries the x-ratelimit-* headers of the limits that
applied, and the usage a successful response reports (its JSON body, or its stream's usage
event, read as it passes) is counted and settles the token reservations before that release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import aiohttp
from starlette.types import Send

from onwards import errors
from onwards.convert import to_anthropic_error
from onwards.convert.adapters import ANTHROPIC_CLIENTS
from onwards.errors import GatewayError
from onwards.proxy import sanitize
from onwards.proxy.exchange import ClientGone, Exchange
from onwards.proxy.headers import DROP_DOWNSTREAM
from onwards.proxy.plan import ProviderPlan
from onwards.proxy.upstream import UpstreamResponse
from onwards.tokens.usage import Usage, usage_from_json

log = logging.getLogger("onwards.proxy")

_JSON_CT = (b"content-type", b"application/json")

Headers = list[tuple[bytes, bytes]]


class StreamRewriter(Protocol):
    """Rewrites a stream as it passes (the sanitizers); `failed` ends it early."""

    failed: bool

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def passthrough_headers(ex: Exchange, pplan: ProviderPlan, response: UpstreamResponse) -> Headers:
    """The upstream's headers the client gets, then the configured ones, then our request id and
    the x-ratelimit-* headers of the gateway's own limits."""
    overridden = pplan.overridden
    # The upstream's own x-request-id (OpenAI sends one) is dropped: with ours appended below
    # the client would get two, and clients join them or pick either.
    headers = [
        (lname, value)
        for name, value in response.raw_headers
        if (lname := name.lower()) not in DROP_DOWNSTREAM
        and lname not in overridden
        and lname != b"x-request-id"
    ]
    headers.extend(pplan.response_headers)
    headers.append(ex.request.rid_header)
    limits = ex.meter.headers()
    if limits:
        # The gateway's limits replace the provider's own x-ratelimit-* headers of the same names:
        # the client is limited by the gateway first, and two values for one name would confuse it.
        names = {name for name, _ in limits}
        headers = [h for h in headers if h[0] not in names]
        headers.extend(limits)
    return headers


async def respond(ex: Exchange, pplan: ProviderPlan, response: UpstreamResponse) -> int:
    """Answer the client from `response`; returns the status sent."""
    status = response.status
    rid_header = ex.request.rid_header
    headers = passthrough_headers(ex, pplan, response)
    content_type = response.headers.get("Content-Type", "")
    is_sse = content_type.startswith("text/event-stream")
    # Only successes are read for usage: a JSON body whole at its end, a stream as it passes.
    ok = 200 <= status < 300
    json_usage = ok and not is_sse and content_type.startswith("application/json")
    if pplan.sanitize:
        if status >= 300 or status < 200:
            # The upstream's own headers could name the provider; a sanitized error carries none.
            body = sanitize.sanitized_error_body(status)
            if ex.request.protocol in ANTHROPIC_CLIENTS:  # /v1/messages passed through to its provider
                body = to_anthropic_error(status, body)
            return await send_whole(ex, status, [rid_header, *ex.meter.headers()], body, replace_ct=True)
        if is_sse:
            return await stream(
                ex, pplan, response, status, headers, sanitize.SseSanitizer(ex.request.model), True, ok
            )
        if "/chat/completions" in ex.scope["path"]:
            raw = await response.read()
            count_usage(ex, pplan, usage_from_json(raw))
            try:
                clean = sanitize.sanitize_chat_completion(raw, ex.request.model)
            except sanitize.SanitizeError as exc:
                raise GatewayError(
                    500, errors.INTERNAL, log=f"cannot sanitize {pplan.label} response: {exc}"
                ) from None
            return await send_whole(ex, status, headers, clean)
    length = response.content_length
    if length is not None and not is_sse:
        return await _known_length(ex, pplan, response, status, headers, length, json_usage)
    return await stream(ex, pplan, response, status, headers, None, is_sse, ok and is_sse, json_usage)


async def start(send: Send, status: int, headers: Headers) -> None:
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
    except Exception as exc:  # the server raises when the client is gone
        raise ClientGone() from exc


async def body(send: Send, chunk: bytes, more: bool) -> None:
    try:
        await send({"type": "http.response.body", "body": chunk, "more_body": more})
    except Exception as exc:
        raise ClientGone() from exc


async def send_whole(
    ex: Exchange, status: int, headers: Headers, content: bytes, replace_ct: bool = False
) -> int:
    if replace_ct:
        headers = [h for h in headers if h[0] != b"content-type"]
        headers.append(_JSON_CT)
    headers.append((b"content-length", str(len(content)).encode()))
    await ex.permits.release_before_end()
    await start(ex.send, status, headers)
    await body(ex.send, content, False)
    ex.outcome.bytes_out = len(content)
    return status


async def _known_length(
    ex: Exchange,
    pplan: ProviderPlan,
    response: UpstreamResponse,
    status: int,
    headers: Headers,
    length: int,
    json_usage: bool,
) -> int:
    headers.append((b"content-length", str(length).encode()))
    send = ex.send
    permits = ex.permits
    # A HEAD answer (and a 304) states the length of a body that is never sent.
    if length == 0 or status == 304 or ex.scope["method"] == "HEAD":
        await permits.release_before_end()
        await start(send, status, headers)
        await body(send, b"", False)
        return status
    await start(send, status, headers)
    content = response.content
    remaining = length
    sent = 0
    # A JSON body is kept (references to its chunks) to read its usage at the end.
    parts: list[bytes] | None = [] if json_usage else None
    try:
        while remaining > 0:
            try:
                chunk = await content.readany()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                # Headers (with the length) are gone already: the client sees a short body.
                kind = "timeout" if isinstance(exc, TimeoutError) else "reset"
                ex.gw.metrics.upstream_error(pplan.label, kind)
                ex.outcome.error = f"upstream body broke: {type(exc).__name__}"
                chunk = b""
            if not chunk:
                # The upstream ended early: the client sees a short body, as it would directly.
                log.warning("%s ended the body %d bytes early", pplan.label, remaining)
                await permits.release_before_end()
                await body(send, b"", False)
                break
            remaining -= len(chunk)
            if parts is not None:
                parts.append(chunk)
            if remaining <= 0:
                if parts is not None:
                    count_usage(ex, pplan, usage_from_json(chunk if len(parts) == 1 else b"".join(parts)))
                await permits.release_before_end()
                await body(send, chunk, False)
            else:
                await body(send, chunk, True)
            sent += len(chunk)
    finally:
        ex.outcome.bytes_out = sent
    ex.gw.metrics.streamed(pplan.label, sent, 0)
    return status


async def stream(
    ex: Exchange,
    pplan: ProviderPlan,
    response: UpstreamResponse,
    status: int,
    headers: Headers,
    sanitizer: StreamRewriter | None,
    sse: bool,
    sse_usage: bool = False,
    json_usage: bool = False,
) -> int:
    """A body of unknown length, sent as it arrives. A successful event stream is read for usage
    (and stripped of a usage the gateway asked for); a JSON body is kept to read its usage at the end."""
    # A stream can last minutes: watch for a client that leaves from the first byte on.
    ex.watch.start()
    send = ex.send
    await start(send, status, headers)
    content = response.content
    sent = events = 0
    reader = ex.meter.stream_reader() if sse_usage else None
    parts: list[bytes] | None = [] if json_usage else None
    try:
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            if parts is not None:
                parts.append(chunk)
            if reader is not None:
                chunk = reader.feed(chunk)
                if not chunk:
                    continue
            if sanitizer is not None:
                chunk = sanitizer.feed(chunk)
                if sanitizer.failed:
                    # The rewriter ended the stream (it sent its own last event): stop reading.
                    if chunk:
                        sent += len(chunk)
                        await body(send, chunk, True)
                    break
                if not chunk:
                    continue
            events += chunk.count(b"\n\n")
            sent += len(chunk)
            await body(send, chunk, True)
        tail = b""
        if reader is not None:
            tail = reader.flush()
            count_usage(ex, pplan, reader.usage)
        elif parts:
            count_usage(ex, pplan, usage_from_json(b"".join(parts)))
        if sanitizer is not None:
            tail = sanitizer.feed(tail) + sanitizer.flush() if tail else sanitizer.flush()
        if tail:
            events += tail.count(b"\n\n")
            sent += len(tail)
            await body(send, tail, True)
    except TimeoutError:
        # Nothing arrived for stream_idle_timeout_secs (aiohttp's sock_read): the provider stalled.
        # A stream cut short reports no usage: its reservation stays spent.
        ex.gw.metrics.upstream_error(pplan.label, "timeout")
        idle = pplan.provider.stream_idle_timeout_secs
        ex.outcome.error = f"upstream stream idle for {idle:g} s"
        await ex.permits.release_before_end()
        if sse:
            await body(send, STREAM_IDLE_EVENT, True)
    except (aiohttp.ClientError, OSError) as exc:
        # Headers are gone already: all we can do is end the body where the upstream broke. A
        # stream cut short reports no usage: its reservation stays spent.
        ex.gw.metrics.upstream_error(pplan.label, "reset")
        ex.outcome.error = f"upstream stream broke: {type(exc).__name__}"
    except asyncio.CancelledError:
        if sse and ex.gw.drain.cutting:
            # Cut at shutdown: the client is told why its stream ends here.
            await ex.permits.release_before_end()
            with contextlib.suppress(ClientGone):
                await body(send, SHUTDOWN_EVENT, True)
        raise
    finally:
        ex.gw.metrics.streamed(pplan.label, sent, events)
        ex.outcome.bytes_out = sent
    await ex.permits.release_before_end()
    await body(send, b"", False)
    return status


def _sse_error(message: str, code: str) -> bytes:
    data = errors.error_body(message, "server_error", code)
    return b"event: error\ndata: " + data + b"\n\n"


STREAM_IDLE_EVENT = _sse_error(
    "The upstream stopped sending in the middle of the stream; the gateway ended it.", "stream_idle_timeout"
)
SHUTDOWN_EVENT = _sse_error(
    "The gateway is shutting down; the stream was cut. Please retry.", "shutting_down"
)


def count_usage(ex: Exchange, pplan: ProviderPlan, usage: Usage | None) -> None:
    """Count the usage a response reported, and settle the reservations to it."""
    if usage is None:
        return
    ex.meter.usage = usage
    outcome = ex.outcome
    outcome.prompt_tokens = usage.prompt
    outcome.completion_tokens = usage.completion
    ex.permits.settle_to(usage.total)
    keydef = ex.request.keydef
    ex.gw.metrics.tokens_used(
        outcome.target, pplan.label, "none" if keydef is None else keydef.name, usage.prompt, usage.completion
    )


async def send_error(send: Send, exc: GatewayError, rid_header: tuple[bytes, bytes]) -> None:
    """The gateway's own answer: the error's JSON body, status and extra headers (Retry-After)."""
    headers = [
        _JSON_CT,
        (b"content-length", str(len(exc.body)).encode()),
        rid_header,
        *exc.headers,
    ]
    try:
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": exc.body, "more_body": False})
    except Exception as err:
        raise ClientGone() from err
