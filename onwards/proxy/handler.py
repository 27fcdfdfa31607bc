"""One request, one pass: read, route, authenticate, admit, forward, stream, release, count.

This is a raw ASGI endpoint rather than a Starlette view: it is the hot path, and every
object it does not build is time a request does not pay.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from yarl import URL

from onwards import errors
from onwards.config.model import ConcurrencyCheck, KeyDefinition
from onwards.errors import GatewayError
from onwards.limits.base import Lease, LimiterUnavailable
from onwards.proxy import sanitize
from onwards.proxy.auth import authenticate, bearer_token
from onwards.proxy.balance import attempt_order
from onwards.proxy.headers import DROP_DOWNSTREAM, forwardable
from onwards.proxy.plan import ProviderPlan, TargetPlan, upstream_url
from onwards.proxy.routing import requested_model, route_group

if TYPE_CHECKING:
    from onwards.gateway import Gateway

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

access_log = logging.getLogger("onwards.access")
log = logging.getLogger("onwards.proxy")

# Retries of an upstream connection that could not be opened (after the first try).
_CONNECT_FIRST_RETRY_S = 0.025
_CONNECT_RETRY: dict[str, Any] = {
    "stop": stop_after_attempt(2),
    "wait": wait_exponential(multiplier=0.05, max=0.2),
    "retry": retry_if_exception_type(aiohttp.ClientConnectorError),
    "reraise": True,
}

# Waiting on an upstream longer than this starts a task that notices a client that went away,
# so its permits are freed. Quick requests never pay for that task.
DISCONNECT_WATCH_DELAY = 0.5
_JSON_HEADERS = ((b"content-type", b"application/json"),)
_EVENT_STREAM = b"text/event-stream"


class ClientGone(Exception):
    """The client disconnected; nothing more can be sent."""


@dataclass(slots=True)
class Outcome:
    """What the access log and the metrics say about one request."""

    target: str = "unknown"
    provider: str = ""
    attempts: int = 0
    limiter: str = "none"  # none | allowed | refused:<scope>:<kind> | degraded | unavailable
    error: str = ""


class ProxyHandler:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        started = time.perf_counter()
        gw.metrics.request_started()
        outcome = Outcome()
        status = 500
        request_id = ""
        path: str = scope["path"]
        try:
            request_id, status = await self._serve(scope, receive, send, outcome)
        finally:
            elapsed = time.perf_counter() - started
            route = route_group(path)
            gw.metrics.request_finished(outcome.target, route, scope["method"], status, elapsed)
            if gw.access_log:
                access_log.info(
                    "%s %s %d",
                    scope["method"],
                    route,
                    status,
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "target": outcome.target,
                        "provider": outcome.provider,
                        "attempts": outcome.attempts,
                        "limiter": outcome.limiter,
                        "duration_ms": round(elapsed * 1000, 3),
                        "error": outcome.error,
                    },
                )

    async def _serve(self, scope: Scope, receive: Receive, send: Send, outcome: Outcome) -> tuple[str, int]:
        gw = self.gateway
        active = gw.active  # this request finishes on the config it started with
        assert active is not None  # the server only routes requests here once the lifespan has started
        snapshot = active.snapshot

        override = authorization = request_id_in = None
        content_length = -1
        forward_headers: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"model-override":
                override = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
            elif name == b"x-request-id":
                request_id_in = value
            if forwardable(name):
                forward_headers.append((name.decode("latin-1"), value.decode("latin-1")))
        request_id = _request_id(request_id_in)
        rid_header = (b"x-request-id", request_id.encode())

        try:
            body = await _read_body(receive, content_length, snapshot.max_body_bytes)
            model, decoded = requested_model(override, body)
            tplan = active.targets.get(model)
            if tplan is None:
                raise GatewayError(404, errors.model_not_found(model), log=f"unknown model {model!r}")
            target = tplan.target
            outcome.target = target.alias
            token = bearer_token(authorization)
            try:
                keydef = authenticate(snapshot, target, token)
            except GatewayError:
                gw.metrics.auth_failure("missing" if token is None else "invalid")
                raise
        except GatewayError as exc:
            outcome.error = str(exc)
            await _send_error(send, exc, rid_header)
            return request_id, exc.status
        except ClientGone:
            outcome.error = "client disconnected while sending the body"
            return request_id, 499

        forward_headers.append(("x-request-id", request_id))
        exchange = _Exchange(
            gw,
            scope,
            receive,
            send,
            tplan,
            keydef,
            body,
            decoded,
            model,
            forward_headers,
            rid_header,
            outcome,
        )
        status = await exchange.run()
        return request_id, status


class _Exchange:
    """Admission, attempts and streaming of one routed request; owns its permits until the end."""

    __slots__ = (
        "body",
        "decoded",
        "disconnected",
        "forward_headers",
        "gw",
        "keydef",
        "leases",
        "model",
        "outcome",
        "receive",
        "renew_due",
        "renew_timer",
        "rid_header",
        "scope",
        "send",
        "task",
        "tplan",
        "watch_task",
        "watch_timer",
    )

    def __init__(
        self,
        gw: Gateway,
        scope: Scope,
        receive: Receive,
        send: Send,
        tplan: TargetPlan,
        keydef: KeyDefinition | None,
        body: bytes,
        decoded: object | None,
        model: str,
        forward_headers: list[tuple[str, str]],
        rid_header: tuple[bytes, bytes],
        outcome: Outcome,
    ) -> None:
        self.gw = gw
        self.scope = scope
        self.receive = receive
        self.send = send
        self.tplan = tplan
        self.keydef = keydef
        self.body = body
        self.decoded = decoded
        self.model = model
        self.forward_headers = forward_headers
        self.rid_header = rid_header
        self.outcome = outcome
        self.leases: list[Lease] = []
        self.renew_timer: asyncio.TimerHandle | None = None
        self.renew_due: float | None = None  # the interval of a renewal not yet scheduled
        self.watch_timer: asyncio.TimerHandle | None = None
        self.watch_task: asyncio.Task[None] | None = None
        self.task: asyncio.Task[Any] | None = None
        self.disconnected = False

    async def run(self) -> int:
        self.task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self.watch_timer = loop.call_later(DISCONNECT_WATCH_DELAY, self._watch_disconnect)
        try:
            return await self._attempts()
        except GatewayError as exc:
            self.outcome.error = str(exc)
            try:
                await self._release_before_end()
                await _send_error(self.send, exc, self.rid_header)
            except ClientGone:
                return 499
            return exc.status
        except ClientGone:
            self.outcome.error = "client disconnected"
            return 499
        except asyncio.CancelledError:
            if not self.disconnected:
                raise
            # Our own watcher cancelled us: the client went away. Swallow the cancel so the
            # server sees a handler that ended, not one that crashed.
            self.outcome.error = "client disconnected"
            return 499
        finally:
            self._stop_watching()
            if self.renew_timer is not None:
                self.renew_timer.cancel()
            if self.leases:
                self._release_all()

    # -- admission -------------------------------------------------------------------------

    async def _admit(self, pplan: ProviderPlan, base_admitted: bool) -> GatewayError | None:
        """Admit against key+target+provider limits (or provider only, once the base is held).

        Returns an error to try the next provider with, or None when admitted; raises when
        the request must be refused outright.
        """
        base = (
            self.tplan.target.checks if self.keydef is None else self.keydef.checks + self.tplan.target.checks
        )
        checks = pplan.checks if base_admitted else base + pplan.checks
        if not checks:
            return None
        gw = self.gw
        try:
            decision = await gw.limiter.admit(checks)
        except LimiterUnavailable:
            self.outcome.limiter = "unavailable"
            raise GatewayError(
                503, errors.LIMITER_UNAVAILABLE, log="limiter unavailable, policy deny"
            ) from None
        if decision.allowed:
            self.outcome.limiter = "degraded" if decision.degraded else "allowed"
            if decision.lease is not None:
                self.leases.append(decision.lease)
                self._schedule_renew(decision.lease.ttl_ms)
            return None
        refused = decision.refused
        assert refused is not None
        is_rate = not isinstance(refused, ConcurrencyCheck)
        kind = "rate" if is_rate else "concurrency"
        self.outcome.limiter = f"refused:{refused.scope}:{kind}"
        gw.metrics.limit_rejected(refused.scope, kind)
        if is_rate:
            headers: tuple[tuple[bytes, bytes], ...] = ()
            if decision.retry_after is not None:
                headers = ((b"retry-after", str(max(1, math.ceil(decision.retry_after))).encode()),)
            error = GatewayError(
                429, errors.RATE_LIMITED[refused.scope], headers, log=f"rate limit of {refused.scope}"
            )
        else:
            error = GatewayError(
                429, errors.CONCURRENCY_LIMITED[refused.scope], log=f"concurrency limit of {refused.scope}"
            )
        if refused.scope == "provider":
            fallback = self.tplan.target.fallback
            # A provider at capacity is skipped like any busy provider; one out of tokens only
            # when the target asks for that with fallback.on_rate_limit.
            if not is_rate or (fallback.enabled and fallback.on_rate_limit):
                return error
        raise error

    def _schedule_renew(self, ttl_ms: int) -> None:
        if self.renew_timer is not None or self.renew_due is not None:
            return
        interval = self.gw.renew_interval_s(ttl_ms)
        if interval <= DISCONNECT_WATCH_DELAY or self.watch_task is not None:
            self.renew_timer = asyncio.get_running_loop().call_later(interval, self._renew, interval)
        else:
            # Nearly every request ends long before its first renewal, so it gets no timer of its
            # own: the disconnect watch that every longer request reaches first (after
            # DISCONNECT_WATCH_DELAY, or when a stream starts) sets it.
            self.renew_due = interval

    def _renew(self, interval: float) -> None:
        for lease in self.leases:
            self.gw.spawn(self.gw.limiter.renew(lease))
        self.renew_timer = asyncio.get_running_loop().call_later(interval, self._renew, interval)

    def _release_all(self) -> None:
        leases, self.leases = self.leases, []
        release = self.gw.limiter.release_soon
        for lease in leases:
            release(lease)

    async def _release_before_end(self) -> None:
        # Permits go back before the client can see the end of the response, so a client that
        # sends its next request at once never finds its own permit still held. Not awaited:
        # the response does not wait a round trip for the answer.
        self._release_all()
        if self.gw.limiter.releases_pending:
            # The limiter writes its queued releases when this loop iteration ends; yielding
            # once lets that write go first.
            await asyncio.sleep(0)

    def _release_provider(self, pplan: ProviderPlan) -> None:
        """Give back a failed provider's own permits; key and target permits stay held."""
        own = pplan.concurrency_ids
        if not own or not self.leases:
            return
        kept: list[Lease] = []
        for lease in self.leases:
            mine = tuple(i for i in lease.limiter_ids if i in own)
            if not mine:
                kept.append(lease)
                continue
            self.gw.limiter.release_soon(Lease(lease.lease_id, mine, lease.ttl_ms))
            rest = tuple(i for i in lease.limiter_ids if i not in own)
            if rest:
                kept.append(Lease(lease.lease_id, rest, lease.ttl_ms))
        self.leases = kept

    # -- attempts --------------------------------------------------------------------------

    async def _attempts(self) -> int:
        target = self.tplan.target
        fallback = target.fallback
        gw = self.gw
        last_error: GatewayError | None = None
        base_admitted = False
        attempts = 0
        for provider in attempt_order(target):
            pplan = self.tplan.providers[provider.index]
            skip = await self._admit(pplan, base_admitted)
            if skip is not None:
                last_error = skip
                continue
            base_admitted = True
            if attempts:
                gw.metrics.fallback_attempt(target.alias)
            attempts += 1
            self.outcome.attempts = attempts
            self.outcome.provider = pplan.label
            # A body that cannot be rewritten is the client's error: no other provider would do better.
            body = self._upstream_body(pplan)
            try:
                response, ttfb = await self._send_upstream(pplan, body)
            except GatewayError as exc:
                if not fallback.enabled:
                    raise
                last_error = exc
                self._release_provider(pplan)
                continue
            gw.metrics.upstream_response(pplan.label, response.status, ttfb)
            if fallback.matches(response.status):
                gw.metrics.upstream_error(pplan.label, "status")
                response.release()
                last_error = GatewayError(
                    502, errors.UPSTREAM_UNREACHABLE, log=f"{pplan.label} answered {response.status}"
                )
                self._release_provider(pplan)
                continue
            try:
                return await self._respond(pplan, response)
            finally:
                response.release()
        if last_error is not None:
            raise last_error
        raise GatewayError(503, errors.NO_PROVIDER, log="target has no selectable provider")

    def _upstream_body(self, pplan: ProviderPlan) -> bytes:
        onwards_model = pplan.provider.onwards_model
        if onwards_model is not None and self.body:
            return self._rewrite_model(onwards_model)
        return self.body

    async def _send_upstream(self, pplan: ProviderPlan, body: bytes) -> tuple[aiohttp.ClientResponse, float]:
        scope = self.scope
        headers = self.forward_headers
        if pplan.sanitize:
            # The sanitizer parses the body: a gzip-compressed one would fail as JSON, and compressed
            # SSE would pass through unsanitized. "identity" rather than no header, which allows any coding.
            headers = [h for h in headers if h[0] != "accept-encoding"]
            headers.append(("accept-encoding", "identity"))
        if pplan.auth is not None:
            # The provider credential replaces a caller header of the same (custom) name; sent
            # together, an upstream reading the first value would take the caller's.
            auth_name = pplan.auth[0].lower()
            headers = [h for h in headers if h[0] != auth_name]
            headers.append(pplan.auth)
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        url = upstream_url(pplan, path, scope["query_string"])
        method = scope["method"]
        target = URL(url, encoded=True)
        data = body if body else None
        started = time.perf_counter()

        try:
            if pplan.timeout is not None:
                async with asyncio.timeout(pplan.timeout):
                    response = await self._open(method, target, headers, data)
            else:
                response = await self._open(method, target, headers, data)
        except TimeoutError:
            self.gw.metrics.upstream_error(pplan.label, "timeout")
            raise GatewayError(504, errors.GATEWAY_TIMEOUT, log=f"{pplan.label} timed out") from None
        except aiohttp.ClientConnectorError as exc:
            self.gw.metrics.upstream_error(pplan.label, "connect")
            raise GatewayError(
                502, errors.UPSTREAM_UNREACHABLE, log=f"{pplan.label} unreachable: {exc}"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            self.gw.metrics.upstream_error(pplan.label, "reset")
            raise GatewayError(
                502, errors.UPSTREAM_UNREACHABLE, log=f"{pplan.label} failed: {type(exc).__name__}: {exc}"
            ) from None
        return response, time.perf_counter() - started

    async def _open(
        self, method: str, target: URL, headers: list[tuple[str, str]], data: bytes | None
    ) -> aiohttp.ClientResponse:
        session = self.gw.session
        try:
            return await session.request(method, target, headers=headers, data=data, allow_redirects=False)
        except aiohttp.ClientConnectorError:
            pass
        # The connection could not be opened, so nothing reached the upstream and trying again is
        # safe even for a POST. Two more tries, 25 ms and 75 ms after the first, ride out a
        # restarting upstream or a full accept queue; the request's own timeout still bounds them.
        await asyncio.sleep(_CONNECT_FIRST_RETRY_S)
        async for attempt in AsyncRetrying(**_CONNECT_RETRY):
            with attempt:
                return await session.request(
                    method, target, headers=headers, data=data, allow_redirects=False
                )
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _rewrite_model(self, onwards_model: str) -> bytes:
        decoded = self.decoded
        if decoded is None:
            try:
                decoded = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                raise GatewayError(
                    400, errors.INVALID_JSON, log="body is not JSON, cannot rewrite model"
                ) from None
            self.decoded = decoded
        if not isinstance(decoded, dict) or "model" not in decoded:
            raise GatewayError(400, errors.MISSING_MODEL, log="body has no model to rewrite")
        return orjson.dumps({**decoded, "model": onwards_model})

    # -- response --------------------------------------------------------------------------

    async def _respond(self, pplan: ProviderPlan, response: aiohttp.ClientResponse) -> int:
        status = response.status
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
        headers.append(self.rid_header)
        content_type = response.headers.get("Content-Type", "")
        is_sse = content_type.startswith("text/event-stream")
        if pplan.sanitize:
            if status >= 300 or status < 200:
                # The upstream's own headers could name the provider; a sanitized error carries none.
                body = sanitize.sanitized_error_body(status)
                return await self._send_whole(status, [self.rid_header], body, replace_ct=True)
            if is_sse:
                return await self._stream(pplan, response, status, headers, sanitize.SseSanitizer(self.model))
            if "/chat/completions" in self.scope["path"]:
                raw = await response.read()
                try:
                    clean = sanitize.sanitize_chat_completion(raw, self.model)
                except sanitize.SanitizeError as exc:
                    raise GatewayError(
                        500, errors.INTERNAL, log=f"cannot sanitize {pplan.label} response: {exc}"
                    ) from None
                return await self._send_whole(status, headers, clean)
        length = response.content_length
        if length is not None and not is_sse:
            return await self._stream_known_length(pplan, response, status, headers, length)
        return await self._stream(pplan, response, status, headers, None)

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            await self.send({"type": "http.response.start", "status": status, "headers": headers})
        except Exception as exc:  # the server raises when the client is gone
            raise ClientGone() from exc

    async def _body(self, chunk: bytes, more: bool) -> None:
        try:
            await self.send({"type": "http.response.body", "body": chunk, "more_body": more})
        except Exception as exc:
            raise ClientGone() from exc

    async def _send_whole(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, replace_ct: bool = False
    ) -> int:
        if replace_ct:
            headers = [h for h in headers if h[0] != b"content-type"]
            headers.append(_JSON_HEADERS[0])
        headers.append((b"content-length", str(len(body)).encode()))
        await self._release_before_end()
        await self._start(status, headers)
        await self._body(body, False)
        return status

    async def _stream_known_length(
        self,
        pplan: ProviderPlan,
        response: aiohttp.ClientResponse,
        status: int,
        headers: list[tuple[bytes, bytes]],
        length: int,
    ) -> int:
        headers.append((b"content-length", str(length).encode()))
        content = response.content
        # A HEAD answer (and a 304) states the length of a body that is never sent.
        if length == 0 or status == 304 or self.scope["method"] == "HEAD":
            await self._release_before_end()
            await self._start(status, headers)
            await self._body(b"", False)
            return status
        await self._start(status, headers)
        remaining = length
        sent = 0
        while remaining > 0:
            chunk = await content.readany()
            if not chunk:
                # The upstream ended early: the client sees a short body, as it would directly.
                log.warning("%s ended the body %d bytes early", pplan.label, remaining)
                await self._release_before_end()
                await self._body(b"", False)
                break
            remaining -= len(chunk)
            sent += len(chunk)
            if remaining <= 0:
                await self._release_before_end()
                await self._body(chunk, False)
            else:
                await self._body(chunk, True)
        self.gw.metrics.streamed(pplan.label, sent, 0)
        return status

    async def _stream(
        self,
        pplan: ProviderPlan,
        response: aiohttp.ClientResponse,
        status: int,
        headers: list[tuple[bytes, bytes]],
        sanitizer: sanitize.SseSanitizer | None,
    ) -> int:
        # A stream can last minutes: watch for a client that leaves from the first byte on.
        self._watch_disconnect()
        await self._start(status, headers)
        content = response.content
        sent = events = 0
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                if sanitizer is not None:
                    chunk = sanitizer.feed(chunk)
                    if not chunk:
                        continue
                events += chunk.count(b"\n\n")
                sent += len(chunk)
                await self._body(chunk, True)
            if sanitizer is not None:
                tail = sanitizer.flush()
                if tail:
                    events += tail.count(b"\n\n")
                    sent += len(tail)
                    await self._body(tail, True)
        except (aiohttp.ClientError, OSError) as exc:
            # Headers are gone already: all we can do is end the body where the upstream broke.
            self.gw.metrics.upstream_error(pplan.label, "reset")
            self.outcome.error = f"upstream stream broke: {type(exc).__name__}"
        finally:
            self.gw.metrics.streamed(pplan.label, sent, events)
        await self._release_before_end()
        await self._body(b"", False)
        return status

    # -- client disconnects ----------------------------------------------------------------

    def _watch_disconnect(self) -> None:
        loop = asyncio.get_running_loop()
        if self.watch_task is None:
            self.watch_task = loop.create_task(self._disconnect_watcher())
        if self.renew_due is not None and self.renew_timer is None:
            # Counted from now less the watch delay: at most that much early (when a stream starts
            # sooner), never late.
            interval = self.renew_due
            self.renew_timer = loop.call_later(interval - DISCONNECT_WATCH_DELAY, self._renew, interval)

    async def _disconnect_watcher(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if self.task is not None:
                    self.task.cancel()
                return

    def _stop_watching(self) -> None:
        if self.watch_timer is not None:
            self.watch_timer.cancel()
        if self.watch_task is not None and self.watch_task is not asyncio.current_task():
            self.watch_task.cancel()


async def _read_body(receive: Receive, content_length: int, limit: int) -> bytes:
    if content_length > limit:
        raise GatewayError(
            413, errors.payload_too_large(limit), log=f"content-length {content_length} over limit"
        )
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise GatewayError(413, errors.payload_too_large(limit), log="body over limit")
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, errors.payload_too_large(limit), log="body over limit")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send_error(send: Send, exc: GatewayError, rid_header: tuple[bytes, bytes]) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(exc.body)).encode()),
        rid_header,
        *exc.headers,
    ]
    try:
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": exc.body, "more_body": False})
    except Exception as err:
        raise ClientGone() from err


def _request_id(given: bytes | None) -> str:
    if given is not None and 0 < len(given) <= 128 and all(0x21 <= b <= 0x7E for b in given):
        return given.decode("ascii")
    return os.urandom(16).hex()  # as unique as a uuid4, at a fraction of its cost
