"""Trace context and optional OpenTelemetry export.

Trace context: a client's W3C `traceparent`/`tracestate` reveal its tracing to whoever
receives them, so they go only to providers that propagate it: `propagate_trace_context` on
the provider, else its resolved `trusted` (default: not propagated, the headers are removed).
With export on, a propagating provider gets this gateway's own context instead (the
attempt's span), so its spans join the trace under the gateway's.

Export is off unless an OTLP endpoint is set in the standard environment variables
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true`
turns it off again). It needs the optional `otel` extra (`pip install 'onwards[otel]'`): the
OpenTelemetry SDK with its OTLP/HTTP exporter, which read the other `OTEL_*` variables
themselves (headers, protocol, service name, resource attributes, batch settings). Each worker
exports its own spans: `onwards.request` per request (target, provider, status, attempts,
limiter outcome; the client's traceparent is its parent) and `onwards.upstream_request` per
upstream attempt. A model step of the Responses adapter is an in-process request of its own: its
`onwards.request` span (kind INTERNAL, `onwards.step_request_id` set) is a child of the outer
`/v1/responses` request's span, which the step's scope carries under STEP_PARENT_KEY, so a
whole response is one trace whatever traceparent the client sent; each server-side tool call
is an `onwards.responses_tool` span under the same parent. When export is off nothing
here runs on the request path beyond one check.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("onwards.trace")

TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
# Scope key of a Responses step: (the outer request's span, the step's request id).
STEP_PARENT_KEY = "onwards.step_parent"
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def export_configured(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINT_VARS)


class Tracing:
    """One worker's exporter and tracer (built only when export is configured)."""

    def __init__(self) -> None:
        # Imported here: the SDK is an optional extra, and off means never imported at all.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        service = os.environ.get("OTEL_SERVICE_NAME") or "onwards"
        self._provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("onwards")
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._client = SpanKind.CLIENT
        self._internal = SpanKind.INTERNAL

    def start_request(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        method: str,
        route: str,
        step: tuple[Any, str] | None = None,
    ) -> Any:
        if step is not None:
            return self._start_step(method, route, *step)
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name in (b"traceparent", b"tracestate")
        }
        parent = self._propagator.extract(carrier) if carrier else None
        return self._tracer.start_span(
            "onwards.request",
            context=parent,
            kind=self._server,
            attributes={"http.request.method": method, "onwards.route": route},
        )

    def _start_step(self, method: str, route: str, parent: Any, step_request_id: str) -> Any:
        from opentelemetry import trace

        return self._tracer.start_span(
            "onwards.request",
            context=trace.set_span_in_context(parent),
            kind=self._internal,
            attributes={
                "http.request.method": method,
                "onwards.route": route,
                "onwards.step_request_id": step_request_id,
            },
        )

    def finish_request(self, span: Any, outcome: Any, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("onwards.target", outcome.target)
        span.set_attribute("onwards.attempts", outcome.attempts)
        span.set_attribute("onwards.limiter", outcome.limiter)
        if outcome.provider:
            span.set_attribute("onwards.provider", outcome.provider)
        if outcome.error:
            span.set_attribute("onwards.error", outcome.error)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def start_attempt(self, parent: Any, provider: str) -> Any:
        from opentelemetry import trace

        return self._tracer.start_span(
            "onwards.upstream_request",
            context=trace.set_span_in_context(parent),
            kind=self._client,
            attributes={"onwards.provider": provider},
        )

    def inject(self, span: Any) -> list[tuple[str, str]]:
        """The traceparent (and tracestate) that name `span` as the upstream's parent."""
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        return list(carrier.items())

    def finish_attempt(self, span: Any, status: int | None, error: str = "") -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error:
            span.set_attribute("onwards.error", error)
        span.end()

    def start_tool(self, parent: Any, name: str, call_id: str) -> Any:
        from opentelemetry import trace

        return self._tracer.start_span(
            "onwards.responses_tool",
            context=trace.set_span_in_context(parent),
            kind=self._internal,
            attributes={"onwards.tool": name, "onwards.tool_call_id": call_id},
        )

    def finish_tool(self, span: Any, error: str) -> None:
        if error:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("onwards.error", error)
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        """Flush what is queued (bounded by the SDK's export timeout)."""
        self._provider.shutdown()


def build_tracing() -> Tracing | None:
    if not export_configured():
        return None
    try:
        return Tracing()
    except ImportError:
        log.warning(
            "an OTLP endpoint is configured but OpenTelemetry is not installed; "
            "install onwards[otel] to export traces (tracing stays off)"
        )
        return None
