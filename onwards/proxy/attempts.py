"""The attempt loop: the one place that orchestrates a routed request.

Providers are tried in the target's order: each is admitted (admission), called (upstream) and,
unless its answer is one the target falls back on, answered from (respond). A provider that fails
gives back its own permits and the next is tried; the last error is the client's answer when none
is left. Whatever the way out, the watch stops and the permits are returned.
"""

from __future__ import annotations

import asyncio

from onwards import errors
from onwards.errors import GatewayError
from onwards.proxy import upstream
from onwards.proxy.admission import admit
from onwards.proxy.balance import attempt_order
from onwards.proxy.exchange import ClientGone, Exchange
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


async def _attempts(ex: Exchange) -> int:
    tplan = ex.request.tplan
    target = tplan.target
    fallback = target.fallback
    metrics = ex.gw.metrics
    outcome = ex.outcome
    last_error: GatewayError | None = None
    base_admitted = False
    attempts = 0
    for provider in attempt_order(target):
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
        # A body that cannot be rewritten is the client's error: no other provider would do better.
        body = upstream.request_body(ex.request, pplan)
        try:
            response, ttfb = await upstream.call(ex, pplan, body)
        except GatewayError as exc:
            if not fallback.enabled:
                raise
            last_error = exc
            ex.permits.release_provider(pplan.concurrency_ids)
            continue
        metrics.upstream_response(pplan.label, response.status, ttfb)
        if fallback.matches(response.status):
            metrics.upstream_error(pplan.label, "status")
            response.release()
            last_error = GatewayError(
                502, errors.UPSTREAM_UNREACHABLE, log=f"{pplan.label} answered {response.status}"
            )
            ex.permits.release_provider(pplan.concurrency_ids)
            continue
        try:
            if ex.request.strict is not None:
                try:
                    return await serve_strict(ex, pplan, response)
                except Retry as retry:
                    last_error = retry.error
                    ex.permits.release_provider(pplan.concurrency_ids)
                    continue
            return await respond(ex, pplan, response)
        finally:
            response.release()
    if last_error is not None:
        raise last_error
    raise GatewayError(503, errors.NO_PROVIDER, log="target has no selectable provider")
