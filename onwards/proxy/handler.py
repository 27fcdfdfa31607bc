"""The ASGI entry of the proxy path: one request in, its metrics and access-log line out
(onwards/access_log.py).

This is a raw ASGI endpoint rather than a Starlette view: it is the hot path, and every object it
does not build is time a request does not pay. The stages it hands the request to are intake
(what was asked), then attempts (admission, upstream call, response, permits, disconnect watch).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from onwards.errors import GatewayError
from onwards.proxy import attempts
from onwards.proxy.converted import client_error
from onwards.proxy.exchange import ClientGone, Exchange, Outcome
from onwards.proxy.intake import Intake
from onwards.proxy.metering import Meter
from onwards.proxy.permits import Permits
from onwards.proxy.respond import send_error
from onwards.proxy.routing import route_group
from onwards.proxy.watch import DisconnectWatch
from onwards.responses import gateway as responses_adapter
from onwards.responses.metrics import responses_metrics
from onwards.trace import STEP_PARENT_KEY

if TYPE_CHECKING:
    from onwards.gateway import Gateway


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
        tracing = gw.tracing
        if tracing is not None:
            outcome.span = tracing.start_request(
                scope["headers"], scope["method"], route_group(path), scope.get(STEP_PARENT_KEY)
            )
        try:
            request_id, status = await self._serve(scope, receive, send, outcome)
        except asyncio.CancelledError:
            if gw.drain.cutting:
                # Logged and counted as the gateway's 503, whatever part of the answer had gone out.
                status = 503
                outcome.error = "cut at shutdown"
            raise
        finally:
            elapsed = time.perf_counter() - started
            if tracing is not None:
                tracing.finish_request(outcome.span, outcome, status)
            if outcome.model:
                gw.metrics.model_finished(outcome.model)
            route = route_group(path)
            gw.metrics.request_finished(outcome.target, route, scope["method"], status, elapsed)
            access = gw.access_log
            if access is not None:
                access.record(scope, route, status, request_id, outcome, elapsed)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, outcome: Outcome) -> tuple[str, int]:
        gw = self.gateway
        active = gw.active  # this request finishes on the config it started with
        assert active is not None  # the server only routes requests here once the lifespan has started
        request = Intake(scope)
        try:
            await request.read(receive, active, gw.metrics, outcome, gw.body_watch)
        except GatewayError as exc:
            outcome.error = str(exc)
            exc = client_error(exc, request.protocol)
            await send_error(send, exc, request.rid_header)
            outcome.bytes_out = len(exc.body)
            return request.request_id, exc.status
        except ClientGone:
            outcome.error = "client disconnected while sending the body"
            return request.request_id, 499
        # One attribute test on the hot path; the adapter's model steps are chat requests of their
        # own, each admitted on its own, so the outer request is not admitted here.
        if request.tplan.responses is not None and _is_responses(scope):
            return request.request_id, await self._serve_responses(request, scope, receive, send, outcome)
        permits = Permits(gw.limiter, gw.spawn, active.renew_interval_s)
        keydef = request.keydef
        meter = Meter(
            request.tplan.token_limited or (keydef is not None and keydef.name in active.token_keys)
        )
        watch = DisconnectWatch(receive, permits)
        exchange = Exchange(gw, scope, send, request, outcome, permits, watch, meter)
        return request.request_id, await attempts.run(exchange)

    async def _serve_responses(
        self, request: Intake, scope: Scope, receive: Receive, send: Send, outcome: Outcome
    ) -> int:
        gw = self.gateway
        plan = request.tplan.responses
        assert plan is not None
        ctx = responses_adapter.AdapterContext(
            app=self,
            plan=plan,
            target=request.tplan.target.alias,
            store=gw.responses_store,
            metrics=responses_metrics(gw.metrics),
            session=gw.session,
            rid_header=request.rid_header,
            tracing=gw.tracing,
            span=outcome.span,
        )
        served = await responses_adapter.serve(ctx, scope, receive, send, request.body)
        outcome.attempts = served.model_calls
        outcome.error = served.error
        outcome.bytes_out = served.bytes_out
        return served.status


def _is_responses(scope: Scope) -> bool:
    return scope["method"] == "POST" and scope["path"] in responses_adapter.PATHS
