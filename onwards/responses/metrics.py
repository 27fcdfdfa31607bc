"""Metrics of the Responses adapter: model calls per response, tool calls by tool, tool latency.

Built once per worker next to the gateway's own metrics (same prefix, same multiprocess
files); a no-op when metrics are off. Labels stay bounded: targets are configured aliases,
tools are configured tool names, outcomes and statuses are fixed literals. Each model step is
also a `/v1/chat/completions` request of its own in the request metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from onwards.metrics import Metrics

STEP_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STATUSES = ("completed", "incomplete", "failed")


class ResponsesMetrics:
    """Records nothing; `PrometheusResponsesMetrics` records."""

    def response_finished(self, target: str, status: str, model_calls: int) -> None:
        pass

    def tool_call(self, target: str, tool: str, ok: bool, seconds: float) -> None:
        pass


class PrometheusResponsesMetrics(ResponsesMetrics):
    def __init__(self, prefix: str) -> None:
        p = f"{prefix}_" if prefix else ""
        self._responses = Counter(
            p + "responses",
            "Responses served by the Responses adapter, by target and final status.",
            ("target", "status"),
            registry=None,
        )
        self._steps = Histogram(
            p + "responses_model_calls",
            "Model calls (steps) one adapter response took, by target.",
            ("target",),
            buckets=STEP_BUCKETS,
            registry=None,
        )
        self._tools = Counter(
            p + "responses_tool_calls",
            "Server-side tool calls run by the adapter, by target, tool and outcome (ok, error).",
            ("target", "tool", "outcome"),
            registry=None,
        )
        self._tool_seconds = Histogram(
            p + "responses_tool_duration_seconds",
            "Time one server-side tool call took, by target and tool.",
            ("target", "tool"),
            buckets=TOOL_BUCKETS,
            registry=None,
        )

    def response_finished(self, target: str, status: str, model_calls: int) -> None:
        self._responses.labels(target, status if status in STATUSES else "failed").inc()
        self._steps.labels(target).observe(model_calls)

    def tool_call(self, target: str, tool: str, ok: bool, seconds: float) -> None:
        self._tools.labels(target, tool, "ok" if ok else "error").inc()
        self._tool_seconds.labels(target, tool).observe(seconds)


_built: dict[str, ResponsesMetrics] = {}


def responses_metrics(metrics: Metrics) -> ResponsesMetrics:
    """The adapter's metrics for this worker, created on first use."""
    prefix = getattr(metrics, "prefix", "")
    found = _built.get(prefix) if metrics.enabled else None
    if found is not None:
        return found
    if not metrics.enabled:
        return ResponsesMetrics()
    built = _built[prefix] = PrometheusResponsesMetrics(prefix)
    return built
