"""The upstream call: url, forwarded headers, model rewrite, connect retry and timeout.

`call` returns an UpstreamResponse or raises the GatewayError the client gets (502 unreachable
or reset, 504 timed out), counted per provider. `dispatch` is the one place that decides how a
provider is reached: an HTTP upstream through the worker's pooled aiohttp session, or, for a
`mock://` provider, the in-process answer of onwards/mock_provider.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Protocol

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from yarl import URL

from onwards import errors
from onwards.convert.adapters import Adapter
from onwards.errors import GatewayError
from onwards.proxy.exchange import Exchange
from onwards.proxy.intake import Intake
from onwards.proxy.plan import ANTHROPIC_VERSION, ProviderPlan, upstream_url
from onwards.reasoning import translated_body, translation_for
from onwards.tokens.estimate import with_usage_requested
from onwards.trace import TRACE_HEADERS


class UpstreamContent(Protocol):
    async def readany(self) -> bytes:
        """The next chunk of the body as it arrives; b"" at its end."""


class UpstreamHeaders(Protocol):
    def get(self, key: str, default: str, /) -> str: ...


class UpstreamResponse(Protocol):
    """What the responder reads from a provider's answer; aiohttp.ClientResponse is one."""

    @property
    def status(self) -> int: ...

    @property
    def raw_headers(self) -> Iterable[tuple[bytes, bytes]]: ...

    @property
    def headers(self) -> UpstreamHeaders: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> UpstreamContent: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...


# Retries of an upstream connection that could not be opened (after the first try).
_CONNECT_FIRST_RETRY_S = 0.025
_CONNECT_RETRY: dict[str, Any] = {
    "stop": stop_after_attempt(2),
    "wait": wait_exponential(multiplier=0.05, max=0.2),
    "retry": retry_if_exception_type(aiohttp.ClientConnectorError),
    "reraise": True,
}


def request_body(request: Intake, pplan: ProviderPlan, ask_usage: bool = False) -> bytes:
    """The body this provider gets: the client's, with `model` rewritten when the provider sets
    onwards_model, reasoning written the provider's way when it translates it (rebuilt from the
    client's body for each attempt), and asking for stream usage when metering needs it
    (`ask_usage`). The body is re-encoded only for those. A body that cannot be rewritten is the
    client's error (400)."""
    onwards_model = pplan.provider.onwards_model
    canonical = request.reasoning
    translation = None if canonical is None else translation_for(pplan.provider, canonical.surface)
    if translation is not None:
        assert canonical is not None and isinstance(request.decoded, dict)
        rewritten = translated_body(translation, canonical, request.decoded)
        if onwards_model is not None:
            rewritten["model"] = onwards_model
        if ask_usage:
            rewritten = with_usage_requested(rewritten)
        return orjson.dumps(rewritten)
    if (onwards_model is None and not ask_usage) or not request.body:
        return request.body
    decoded = request.decoded
    if decoded is None:
        try:
            decoded = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise GatewayError(
                400, errors.INVALID_JSON, log="body is not JSON, cannot rewrite model"
            ) from None
        request.decoded = decoded
    if not isinstance(decoded, dict):
        raise GatewayError(400, errors.MISSING_MODEL, log="body has no model to rewrite")
    if ask_usage:
        decoded = with_usage_requested(decoded)  # only set for JSON objects (metering checked)
    if onwards_model is None:
        return orjson.dumps(decoded)
    if "model" not in decoded:
        raise GatewayError(400, errors.MISSING_MODEL, log="body has no model to rewrite")
    return orjson.dumps({**decoded, "model": onwards_model})


def _headers(request: Intake, pplan: ProviderPlan, adapter: Adapter | None) -> list[tuple[str, str]]:
    headers = request.forward_headers
    if pplan.anthropic and not request.anthropic_version:
        headers = [*headers, ANTHROPIC_VERSION]
    if pplan.sanitize or request.strict is not None or adapter is not None:
        # The sanitizer and the converters parse the body: a gzip-compressed one would fail as JSON,
        # and compressed SSE would pass through unsanitized. "identity" rather than no header,
        # which allows any coding.
        headers = [h for h in headers if h[0] != "accept-encoding"]
        headers.append(("accept-encoding", "identity"))
    if request.has_trace and not pplan.provider.propagate_trace_context:
        # The caller's trace context stays with providers that are trusted with it (trace.py).
        headers = [h for h in headers if h[0] not in TRACE_HEADERS]
    if pplan.auth is not None:
        # The provider credential replaces a caller header of the same (custom) name; sent
        # together, an upstream reading the first value would take the caller's.
        auth_name = pplan.auth[0].lower()
        headers = [h for h in headers if h[0] != auth_name]
        headers.append(pplan.auth)
    return headers


async def call(
    ex: Exchange, pplan: ProviderPlan, body: bytes, adapter: Adapter | None = None
) -> tuple[UpstreamResponse, float]:
    """Send the request to `pplan`; the response (headers read) and the seconds to its first byte.
    A converted request goes to the adapter's path of the provider's protocol, without the client's
    query string (it belongs to the client's protocol: Claude Code sends `?beta=true`)."""
    scope = ex.scope
    headers = _headers(ex.request, pplan, adapter)
    strict_path = ex.request.upstream_path
    if adapter is not None:
        url = URL(upstream_url(pplan, adapter.upstream_path, b""), encoded=True)
    elif strict_path is not None:
        # Strict routes forward to their fixed path, as the Rust gateway does (no query string).
        url = URL(upstream_url(pplan, strict_path, b""), encoded=True)
    else:
        # The canonical path the front checked (onwards/edge/front.py); the raw one when the app
        # is driven without it.
        path = scope.get("onwards.path")
        if path is None:
            raw_path = scope.get("raw_path")
            path = raw_path.decode("latin-1") if raw_path else scope["path"]
        url = URL(upstream_url(pplan, path, scope["query_string"]), encoded=True)
    method = scope["method"]
    data = body if body else None
    tracing = ex.gw.tracing
    attempt = None
    if tracing is not None and ex.outcome.span is not None:
        attempt = tracing.start_attempt(ex.outcome.span, pplan.label)
        if pplan.provider.propagate_trace_context:
            headers = [h for h in headers if h[0] not in TRACE_HEADERS] + tracing.inject(attempt)
    started = time.perf_counter()
    try:
        response = await _timed(ex, pplan, method, url, headers, data)
    except GatewayError as exc:
        if attempt is not None:
            assert tracing is not None
            tracing.finish_attempt(attempt, None, str(exc))
        raise
    if attempt is not None:
        assert tracing is not None
        tracing.finish_attempt(attempt, response.status)
    return response, time.perf_counter() - started


async def _timed(
    ex: Exchange,
    pplan: ProviderPlan,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    data: bytes | None,
) -> UpstreamResponse:
    """Reach the provider within its timeout; failures as the client's GatewayError."""
    metrics = ex.gw.metrics
    try:
        if pplan.timeout is not None:
            async with asyncio.timeout(pplan.timeout):
                response = await dispatch(ex, pplan, method, url, headers, data)
        else:
            response = await dispatch(ex, pplan, method, url, headers, data)
    except TimeoutError:
        metrics.upstream_error(pplan.label, "timeout")
        raise GatewayError(504, errors.GATEWAY_TIMEOUT, log=f"{pplan.label} timed out") from None
    except aiohttp.ClientConnectorError as exc:
        metrics.upstream_error(pplan.label, "connect")
        raise GatewayError(
            502, errors.UPSTREAM_UNREACHABLE, log=f"{pplan.label} unreachable: {exc}"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        metrics.upstream_error(pplan.label, "reset")
        raise GatewayError(
            502, errors.UPSTREAM_UNREACHABLE, log=f"{pplan.label} failed: {type(exc).__name__}: {exc}"
        ) from None
    return response


async def dispatch(
    ex: Exchange,
    pplan: ProviderPlan,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    data: bytes | None,
) -> UpstreamResponse:
    """Reach the provider. The seam for providers that are not a plain HTTP upstream (an
    in-process one, or one behind a protocol converter): they branch here on the plan and return
    their own UpstreamResponse; timeouts and error mapping in `call` apply to them as well."""
    if pplan.mock is not None:
        return await pplan.mock.request(method, url.path, data or b"")
    return await open_http(ex.gw.session, method, url, headers, data, pplan.proxy, pplan.client_timeout)


async def open_http(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    data: bytes | None,
    proxy: str | None,
    timeout: aiohttp.ClientTimeout | None,
) -> aiohttp.ClientResponse:
    """Per provider, compiled in its plan: the egress proxy (None: direct) and the timeouts, whose
    sock_read is the stream idle timeout (aiohttp restarts it with every chunk that arrives)."""
    try:
        return await session.request(
            method, url, headers=headers, data=data, allow_redirects=False, proxy=proxy, timeout=timeout
        )
    except aiohttp.ClientConnectorError:
        pass
    # The connection could not be opened, so nothing reached the upstream and trying again is
    # safe even for a POST. Two more tries, 25 ms and 75 ms after the first, ride out a
    # restarting upstream or a full accept queue; the request's own timeout still bounds them.
    await asyncio.sleep(_CONNECT_FIRST_RETRY_S)
    async for attempt in AsyncRetrying(**_CONNECT_RETRY):
        with attempt:
            return await session.request(
                method, url, headers=headers, data=data, allow_redirects=False, proxy=proxy, timeout=timeout
            )
    raise AssertionError("unreachable: tenacity re-raises the last error")
