"""Trace context as the Rust onwards handles it (handlers.rs withhold_trace_context and
resolve_trace_propagation tests), and OTLP export checked against a tiny OTLP/HTTP receiver,
including the spans of the Responses adapter's model steps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from onwards.trace import export_configured
from tests.support.app_client import app_client
from tests.support.chat_script import ChatScript
from tests.support.mock_upstream import MockUpstream

CHAT = "/v1/chat/completions"
BODY = {"model": "open", "messages": []}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def no_otel(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mock_a(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("a")


def config(mock: MockUpstream) -> dict[str, Any]:
    return {
        "targets": {
            "open": {"url": mock.url + "/v1"},
            "trusted": {"url": mock.url + "/v1", "trusted": True},
            "opted_in": {"url": mock.url + "/v1", "propagate_trace_context": True},
            "opted_out": {"url": mock.url + "/v1", "trusted": True, "propagate_trace_context": False},
        }
    }


TRACE = {"traceparent": PARENT, "tracestate": "vendor=secret"}


async def test_withhold_trace_context_strips_inbound_trace_headers_for_untrusted(write_config, mock_a):
    async with app_client(write_config(config(mock_a))) as client:
        for alias in ("open", "opted_out"):
            r = await client.post(CHAT, json={**BODY, "model": alias}, headers={**TRACE, "x-other": "kept"})
            assert r.status_code == 200
    for seen in mock_a.requests:
        assert "traceparent" not in seen.headers and "tracestate" not in seen.headers
        assert seen.headers["x-other"] == "kept"


async def test_trusted_and_opted_in_providers_get_the_inbound_trace_context(write_config, mock_a):
    async with app_client(write_config(config(mock_a))) as client:
        for alias in ("trusted", "opted_in"):
            await client.post(CHAT, json={**BODY, "model": alias}, headers=TRACE)
    for seen in mock_a.requests:
        assert seen.headers["traceparent"] == PARENT  # export off: passed through as it came
        assert seen.headers["tracestate"] == "vendor=secret"


def test_export_is_off_unless_an_endpoint_is_set():
    assert not export_configured({})
    assert export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert export_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"})
    assert not export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.received.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def spans(server: ThreadingHTTPServer) -> list[Any]:
    out = []
    for path, body in server.received:  # type: ignore[attr-defined]
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                out.extend(scope.spans)
    return out


def attributes(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


async def test_otlp_export_sends_request_and_attempt_spans_and_injects_our_traceparent(
    write_config, mock_a, collector, monkeypatch
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "onwards-test")
    async with app_client(write_config(config(mock_a))) as client:
        trusted = await client.post(CHAT, json={**BODY, "model": "trusted"}, headers=TRACE)
        untrusted = await client.post(CHAT, json={**BODY, "model": "open"}, headers=TRACE)
    # The lifespan's end flushed the exporter: every span has arrived by now.
    assert trusted.status_code == untrusted.status_code == 200
    found = spans(collector)
    requests = [s for s in found if s.name == "onwards.request"]
    attempts = [s for s in found if s.name == "onwards.upstream_request"]
    assert len(requests) == 2 and len(attempts) == 2
    for span in requests:
        assert span.trace_id.hex() == TRACE_ID  # the client's traceparent is the parent
        assert span.parent_span_id.hex() == "00f067aa0ba902b7"
        attrs = attributes(span)
        assert attrs["http.response.status_code"] == 200
        assert attrs["onwards.attempts"] == 1
        assert attrs["onwards.limiter"] == "none"
        assert attrs["onwards.target"] in ("trusted", "open")
        assert attrs["onwards.provider"] in ("trusted/0", "open/0")
    by_target = {attributes(s)["onwards.target"]: s for s in requests}
    attempt_of = {attributes(s)["onwards.provider"]: s for s in attempts}
    trusted_attempt = attempt_of["trusted/0"]
    assert trusted_attempt.parent_span_id == by_target["trusted"].span_id
    first, second = mock_a.requests
    # The trusted provider got our context (the attempt span), not the client's; the other none.
    assert first.headers["traceparent"] == f"00-{TRACE_ID}-{trusted_attempt.span_id.hex()}-01"
    assert "traceparent" not in second.headers and "tracestate" not in second.headers


@pytest.fixture
def script() -> Iterator[ChatScript]:
    with ChatScript() as upstream:
        yield upstream


def responses_config(script: ChatScript) -> dict[str, Any]:
    tool = {
        "name": "lookup",
        "parameters": {"type": "object"},
        "url": f"http://127.0.0.1:{script.port}/tools/lookup",
    }
    adapter = {"adapter": True, "tools": [tool]}
    return {
        "targets": {"chat": {"url": script.url, "open_responses": adapter, "propagate_trace_context": True}}
    }


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("traced", [True, False])
async def test_each_responses_step_is_a_child_span_of_the_response_request(
    write_config, script, collector, monkeypatch, stream, traced
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    body = {
        "model": "chat",
        "input": 'call lookup {"q": "moon"}',
        "tools": [{"type": "hosted_tool", "name": "lookup"}],
    }
    async with app_client(write_config(responses_config(script))) as client:
        reply = await client.post(
            "/v1/responses", json={**body, "stream": stream}, headers=TRACE if traced else {}
        )
        assert reply.status_code == 200
        assert "tool said:" in reply.text and ("response.completed" in reply.text) == stream
    found = spans(collector)
    requests = [s for s in found if s.name == "onwards.request"]
    attempts = [s for s in found if s.name == "onwards.upstream_request"]
    [outer] = [s for s in requests if attributes(s)["onwards.route"] == "/v1/responses"]
    steps = [s for s in requests if s is not outer]
    assert len(steps) == 2 and len(attempts) == 2
    if traced:
        assert outer.trace_id.hex() == TRACE_ID
        assert outer.parent_span_id.hex() == "00f067aa0ba902b7"
    assert attributes(outer)["onwards.attempts"] == 2  # its model calls
    step_ids = sorted(attributes(s)["onwards.step_request_id"] for s in steps)
    assert [i.rsplit(".", 1)[1] for i in step_ids] == ["step0", "step2"]  # the tool call is step1
    for step in steps:
        assert step.trace_id == outer.trace_id
        assert step.parent_span_id == outer.span_id
        assert step.kind == Span.SpanKind.SPAN_KIND_INTERNAL
        assert attributes(step)["onwards.route"] == "/v1/chat/completions"
        assert attributes(step)["http.response.status_code"] == 200
    assert sorted(a.parent_span_id for a in attempts) == sorted(s.span_id for s in steps)
    [tool] = [s for s in found if s.name == "onwards.responses_tool"]
    assert (tool.trace_id, tool.parent_span_id) == (outer.trace_id, outer.span_id)
    assert attributes(tool)["onwards.tool"] == "lookup"
    assert attributes(tool)["onwards.tool_call_id"].startswith("call_")
    assert "onwards.error" not in attributes(tool)
    # Each upstream call names its own attempt span as its parent, in the response's trace (the
    # flags vary: a trace the gateway started also has the random-trace-id flag).
    sent = [r["headers"]["traceparent"].split("-")[1:3] for r in script.chat_requests()]
    assert sorted(sent) == sorted([outer.trace_id.hex(), a.span_id.hex()] for a in attempts)


async def test_a_failing_tool_call_is_an_error_span(write_config, script, collector, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    config = responses_config(script)
    broken = {"name": "broken", "parameters": {"type": "object"}, "url": f"{script.url[:-3]}/tools/broken"}
    config["targets"]["chat"]["open_responses"]["tools"].append(broken)
    body = {"model": "chat", "input": "call broken {}", "tools": [{"type": "hosted_tool", "name": "broken"}]}
    async with app_client(write_config(config)) as client:
        reply = await client.post("/v1/responses", json=body)
        assert reply.status_code == 200  # the model read the tool's failure and answered
    [tool] = [s for s in spans(collector) if s.name == "onwards.responses_tool"]
    assert attributes(tool)["onwards.tool"] == "broken"
    assert "HTTP 500" in attributes(tool)["onwards.error"]
    assert tool.status.code == tool.status.STATUS_CODE_ERROR
