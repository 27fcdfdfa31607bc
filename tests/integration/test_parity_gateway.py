"""Rust-parity behaviour through real gateway processes (two workers) on loopback: the per-model
in-flight gauge summed over workers, strict mode's typed router and error standardization, and
routing rules."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mock_upstream import Canned, MockUpstream
from tests.support.processes import GatewayProcess, wait_until

pytestmark = pytest.mark.integration


def post(
    gw: GatewayProcess, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=15)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def model_inflight(gw: GatewayProcess) -> dict[str, float]:
    text = httpx.get(gw.metrics_url, timeout=5).text
    return {
        s.labels["model"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "onwards_model_inflight"
    }


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("parity-mock") as upstream:
        yield upstream


def run(path: Path, config: dict[str, Any]) -> GatewayProcess:
    path.write_text(json.dumps(config))
    process = GatewayProcess(path, workers=2, extra_args=["--watch=false"])
    process.start()
    return process


@pytest.fixture(scope="module")
def plain(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "auth": {"key_definitions": {"play": {"key": "sk-play", "labels": {"purpose": "playground"}}}},
        "targets": {
            "gpt": {"url": mock.url + "/v1"},
            "guarded": {
                "providers": [{"url": mock.url + "/v1"}],
                "routing_rules": [{"match_labels": {"purpose": "playground"}, "action": {"type": "deny"}}],
            },
        },
    }
    process = run(tmp_path_factory.mktemp("plain") / "config.json", config)
    yield process
    process.stop()
    process.close()


@pytest.fixture(scope="module")
def strict(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"strict_mode": True, "targets": {"gpt": {"url": mock.url + "/v1"}}}
    process = run(tmp_path_factory.mktemp("strict") / "config.json", config)
    yield process
    process.stop()
    process.close()


def test_onwards_model_inflight_is_summed_over_workers_until_the_last_byte(plain: GatewayProcess):
    slow = 4
    statuses: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        status, _ = post(
            plain, "/v1/chat/completions", {"model": "gpt", "messages": []}, {"x-mock-delay": "8"}
        )
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send) for _ in range(slow)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: model_inflight(plain).get("gpt") == slow, timeout=7.5, interval=0.05)
    finally:
        for t in threads:
            t.join(15)
    assert statuses == [200] * slow
    wait_until(lambda: model_inflight(plain).get("gpt") == 0.0, timeout=3)


def test_onwards_model_inflight_not_created_for_unknown_model(plain: GatewayProcess):
    status, _ = post(plain, "/v1/embeddings", {"model": "no-such-model", "input": "x"})
    assert status == 404
    assert "no-such-model" not in model_inflight(plain)


def test_routing_rule_deny_in_a_real_process(plain: GatewayProcess):
    status, body = post(
        plain,
        "/v1/chat/completions",
        {"model": "guarded", "messages": []},
        {"authorization": "Bearer sk-play"},
    )
    assert status == 403
    assert json.loads(body)["error"]["code"] == "forbidden"


def test_strict_router_refuses_unknown_paths_and_standardizes_errors(
    strict: GatewayProcess, mock: MockUpstream
):
    before = mock.request_count
    status, _ = post(strict, "/v1/files", {"model": "gpt"})
    assert status == 404
    assert mock.request_count == before
    mock.answer_next(Canned(402, b'{"error":{"message":"account 1234 is out of credits"}}'))
    status, body = post(strict, "/v1/chat/completions", {"model": "gpt", "messages": []})
    assert status == 502
    assert json.loads(body) == {
        "error": {"message": "Bad gateway", "type": "api_error", "param": None, "code": None}
    }
    status, body = post(strict, "/v1/chat/completions", {"model": "gpt", "messages": []})
    assert status == 200
    assert json.loads(body)["model"] == "gpt"


def test_strict_stream_that_only_sends_keepalives_is_served_not_retried(
    strict: GatewayProcess, mock: MockUpstream
):
    # The upstream stalls after a few keep-alives: strict mode's peek sees no data and no
    # error, so it serves the stream as it is (the client gets its headers and the kept blank
    # lines) instead of failing over or waiting for the first token.
    before = mock.request_count
    mock.answer_next(
        Canned(200, [b": keep-alive\n\n", b": keep-alive\n\n"], content_type="text/event-stream", stall=True)
    )
    body = {"model": "gpt", "messages": [], "stream": True}
    with (
        httpx.Client(timeout=15) as client,
        client.stream("POST", f"http://{strict.host}:{strict.port}/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        first = next(r.iter_raw())
    assert first.strip() == b""  # comments are dropped in strict mode; their blank lines are kept
    assert mock.request_count == before + 1
