"""The attempt loop: the one place that orchestrates a routed request.

Providers are tried in the target's order: each is admitted (admission), called (upstream) and,
unless its answer is one the target falls back on, answered from (respond). A provider that fails
gives back its own permits and the next is tried; the last error is the client's answer when none
is left. Whatever the way out, the watch stops and the permits are returned.
"""

from __future__ import annotations

import asyncio

from onwards import errors
from onwards.config.model import FallbackSpec
from onwards.convert.adapters import CLIENT_COUNT_TOKENS
from onwards.errors import GatewayError
from onwards.proxy import converted, upstream
from onwards.proxy.admission import admit
from onwards.proxy.backoff import RetryBudget
from onwards.proxy.balance import attempt_order
from onwards.proxy.exchange import ClientGone, Exchange
from onwards.proxy.plan import ProviderPlan
from onwards.proxy.respond import respond, send_error
from onwards.proxy.strict_respond import serve_strict
from onwards.strict.inspect import Retry


async def run(ex: Exchange) -> int:
    """Serve `ex` to its end; returns the status for the log (499 when the client left)."""
    outcome = ex.outcome
    try:
        return await _attempts(ex)
    except GatewayError as exc:
        outcome.error = str(exc)
        exc = converted.client_error(exc, ex.request.protocol)
        try:
            await ex.permits.release_before_end()
            await send_error(ex.send, exc, ex.request.rid_header)
        except ClientGone:
            return 499
        outcome.bytes_out = len(exc.body)
        return exc.status
    except ClientGone:
        outcome.error = "client disconnected"
        return 499
    except asyncio.CancelledError:
        if not ex.watch.disconnected:
            raise
        # Our own watch cancelled us: the client went away. Swallow the cancel so the server
        # sees a handler that ended, not one that crashed.
        outcome.error = "client disconnected"
        return 499
    finally:
        ex.watch.stop()
        ex.permits.close()
        if ex.permits.unsettled:
            ex.gw.metrics.tokens_unsettled(ex.request.tplan.target.alias)


async def _attempts(ex: Exchange) -> int:
    tplan = ex.request.tplan
    target = tplan.target
    fallback = target.fallback
    metrics = ex.gw.metrics
    outcome = ex.outcome
    in_flight = ex.gw.provider_in_flight
    pauses = RetryBudget(fallback) if fallback.backoff is not None else None
    last_error: GatewayError | None = None
    base_admitted = False
    attempts = tried = 0
    for provider in attempt_order(target, in_flight=in_flight):
        # Between two attempts (never after the last), the backoff's pause, within its budget.
        if tried and pauses is not None and not await _pause(ex, pauses, tried):
            break
        tried += 1
        pplan = tplan.providers[provider.index]
        skip = await admit(ex, pplan, base_admitted)
        if skip is not None:
            last_error = skip
            continue
        base_admitted = True
        if attempts:
            metrics.fallback_attempt(target.alias)
        attempts += 1
        outcome.attempts = attempts
        outcome.provider = pplan.label
        # Requests in flight per provider (this worker) steer weighted_random's least-connections.
        label = pplan.label
        in_flight[label] = in_flight.get(label, 0) + 1
        try:
            result = await _attempt(ex, pplan, fallback)
        finally:
            in_flight[label] -= 1
        if isinstance(result, GatewayError):
            last_error = result
            ex.permits.release_provider(pplan.concurrency_ids, pplan.token_ids)
            continue
        return result
    if last_error is not None:
        raise last_error
    raise GatewayError(503, errors.NO_PROVIDER, log="target has no selectable provider")


async def _attempt(ex: Exchange, pplan: ProviderPlan, fallback: FallbackSpec) -> int | GatewayError:
    """One provider: its answer sent (the status), or the error to fall back with."""
    metrics = ex.gw.metrics
    # Each attempt is converted for its own provider's protocol, so a failover can cross formats.
    protocol = ex.request.protocol
    adapter = pplan.adapters.get(protocol) if protocol is not None else None
    if protocol == CLIENT_COUNT_TOKENS and not pplan.anthropic:
        return await converted.count_tokens(ex)
    if adapter is None:
        # A body that cannot be rewritten is the client's error: no other provider would do better.
        # Strict mode reads the provider's stream itself: it is never asked for usage on the client's behalf.
        ask_usage = ex.meter.ask_usage and ex.request.strict is None
        body = upstream.request_body(ex.request, pplan, ask_usage)
    else:
        try:
            body = converted.request_body(ex.request, pplan, adapter)
        except GatewayError as exc:
            # A provider of the client's own protocol may still take the request as it is.
            if not fallback.enabled:
                raise
            return exc
    try:
        response, ttfb = await upstream.call(ex, pplan, body, adapter)
    except GatewayError as exc:
        if not fallback.enabled:
            raise
        return exc
    metrics.upstream_response(pplan.label, response.status, ttfb)
    if fallback.matches(response.status):
        metrics.upstream_error(pplan.label, "status")
        response.release()
        return GatewayError(502, errors.UPSTREAM_UNREACHABLE, log=f"{pplan.label} answered {response.status}")
    try:
        if ex.request.strict is not None:
            try:
                return await serve_strict(ex, pplan, response)
            except Retry as retry:
                return retry.error
        if adapter is not None:
            return await converted.respond(ex, pplan, response, adapter)
        return await respond(ex, pplan, response)
    finally:
        response.release()


async def _pause(ex: Exchange, pauses: RetryBudget, failed_attempt: int) -> bool:
    """Sleep before the next attempt; False when the pause would exceed max_total_backoff_ms."""
    pause_ms = pauses.next_pause_ms(failed_attempt)
    if pause_ms is None:
        ex.gw.metrics.retry_budget_exhausted()
        return False
    ex.gw.metrics.retry_backoff()
    if pause_ms:
        await asyncio.sleep(pause_ms / 1000)
    return True
