"""/health, /ready and the access log of a real two-worker gateway.

The access log is read from the gateway's own stderr; the mock upstream records what reached it, so
x-request-id can be followed from the client through the gateway to the upstream and back.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from onwards import __version__
from tests.support.mock_upstream import MockUpstream
from tests.support.processes import GatewayProcess, free_port, wait_until

pytestmark = pytest.mark.integration

CLIENT_KEY = "sk-logs-client-5d1e0b"
UPSTREAM_KEY = "sk-logs-upstream-c07a44"
UPSTREAM_REQUEST_ID = "req_from_the_provider_0001"
DEFINED_KEY = "sk-logs-defined-9a41e2"  # the token of key definition "logs-team"
ACCESS_FIELDS = {
    "request_id",
    "client",
    "method",
    "route",
    "target",
    "provider",
    "key",
    "status",
    "duration_ms",
    "bytes_out",
    "attempts",
    "limiter",
    "error",
}


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # as received, repeated names kept
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    def header(self, name: str) -> str:
        """The one value of header `name`; a missing or repeated header fails the test."""
        values = [v for k, v in self.headers if k == name]
        assert len(values) == 1, (name, self.headers)
        return values[0]


def request(
    gw: GatewayProcess,
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection (so successive calls land on either worker)."""
    sent = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        sent.setdefault("content-type", "application/json")
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
    try:
        conn.request(method, path, body, sent)
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
        return Reply(response.status, [(k.lower(), v) for k, v in response.getheaders()], text)
    finally:
        conn.close()


def chat(gw: GatewayProcess, model: str = "gpt", content: str = "hi", **headers: str) -> Reply:
    return request(
        gw,
        "POST",
        "/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": content}]},
        headers,
    )


def access_entries(gw: GatewayProcess) -> list[dict[str, Any]]:
    """Every access-log line of the gateway, each required to be one JSON object."""
    entries = []
    for line in gw.output().splitlines():
        if "onwards.access" in line:
            entry = json.loads(line)  # a non-JSON access line fails here
            assert entry["logger"] == "onwards.access", line
            entries.append(entry)
    return entries


def access_entry(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    """The access-log entry of one request (waited for: it is written after the response ends)."""

    def find() -> dict[str, Any] | None:
        found = [e for e in access_entries(gw) if e["request_id"] == request_id]
        assert len(found) <= 1, found
        return found[0] if found else None

    try:
        return wait_until(find, timeout=5)
    except TimeoutError:
        pytest.fail(f"no access-log line with request_id {request_id!r}\n{gw.describe()}")


class _OwnIdUpstream(BaseHTTPRequestHandler):
    """An upstream that, like OpenAI, answers with its own x-request-id."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"object": "chat.completion", "choices": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-request-id", UPSTREAM_REQUEST_ID)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def write_config(path: Path, mock: MockUpstream, own_id_url: str | None = None, **top_level: Any) -> Path:
    targets: dict[str, Any] = {
        "gpt": {"url": mock.url + "/v1", "onwards_key": UPSTREAM_KEY, "keys": [CLIENT_KEY]},
        "open": {"url": mock.url + "/v1"},
        "limited": {"url": mock.url + "/v1", "rate_limit": {"requests_per_second": 1000}},
    }
    if own_id_url is not None:
        targets["own-id"] = {"url": own_id_url + "/v1"}
    auth = {"key_definitions": {"logs-team": {"key": DEFINED_KEY}}}
    path.write_text(json.dumps({"targets": targets, "auth": auth, **top_level}))
    return path


@contextlib.contextmanager
def gateways(*processes: GatewayProcess) -> Iterator[None]:
    """Start several gateways at once (their start-ups overlap) and stop them all afterwards."""
    try:
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready(process.ready, process.startup_timeout)
        yield
    finally:
        for process in processes:
            process.stop()
            print(f"--- {process.describe()}")
            process.close()


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("logs-mock") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def own_id_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OwnIdUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def config_path(mock: MockUpstream, own_id_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("logs") / "config.json", mock, own_id_url)


@pytest.fixture(scope="module")
def gw(config_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(config_path, workers=2, extra_args=["--log-format", "json", "--watch=false"])
    with gateways(process):
        yield process


# --- /health and /ready ----------------------------------------------------------------------


def test_health_says_healthy_with_version_and_uptime(gw: GatewayProcess):
    first = request(gw, "GET", "/health")
    assert first.status == 200
    assert first.header("content-type") == "application/json"
    body = first.json()
    assert set(body) == {"status", "version", "uptime_seconds", "config_version"}, body
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    assert isinstance(body["uptime_seconds"], int | float) and body["uptime_seconds"] >= 0
    ready = request(gw, "GET", "/ready").json()
    assert body["config_version"] == ready["config_version"]
    time.sleep(0.05)
    # Each worker counts from its own start; both started before the first answer above.
    later = max(request(gw, "GET", "/health").json()["uptime_seconds"] for _ in range(6))
    assert later > body["uptime_seconds"]


def test_ready_once_the_config_is_loaded(gw: GatewayProcess):
    for _ in range(6):  # fresh connections, so both workers answer some
        reply = request(gw, "GET", "/ready")
        assert reply.status == 200, reply.text
        body = reply.json()
        assert body["status"] == "ready"
        assert body["limiter_healthy"] is True
        assert re.fullmatch(r"[0-9a-f]+", body["config_version"]), body


@pytest.fixture(scope="module")
def redis_down(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisDown]:
    """Two gateways whose Redis is a closed port: one with policy deny (JSON logs), one with allow.

    The allow one logs in the default pretty format, so the pretty test needs no gateway of its own.
    """
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    base = tmp_path_factory.mktemp("redis-down")
    deny = GatewayProcess(
        write_config(base / "deny.json", mock, limits={"on_redis_error": "deny"}),
        redis_url=dead_redis,
        extra_args=["--log-format", "json", "--watch=false"],
    )
    allow = GatewayProcess(
        write_config(base / "allow.json", mock, limits={"on_redis_error": "allow"}),
        redis_url=dead_redis,
        extra_args=["--watch=false"],
    )
    with gateways(deny, allow):
        yield RedisDown(deny, allow)


@dataclass
class RedisDown:
    deny: GatewayProcess
    allow: GatewayProcess


def pretty_line(gw: GatewayProcess, request_id: str) -> str:
    def find() -> str | None:
        return next((x for x in gw.output().splitlines() if f"request_id={request_id} " in x), None)

    try:
        return wait_until(find, timeout=5)
    except TimeoutError:
        pytest.fail(f"no access-log line with request_id {request_id!r}\n{gw.describe()}")


def test_ready_with_redis_down_depends_on_the_failure_policy(redis_down: RedisDown):
    deny, allow = redis_down.deny, redis_down.allow
    for _ in range(6):
        # deny: this replica would only answer 503s, so it leaves the load balancer's rotation...
        reply = request(deny, "GET", "/ready")
        assert reply.status == 503, reply.text
        assert reply.json()["status"] == "limiter_unavailable"
        # ...but it is alive: /health stays 200, and nothing restarts it.
        assert request(deny, "GET", "/health").status == 200
        # allow: it serves, without limits, so it stays ready and says the limiter is down.
        reply = request(allow, "GET", "/ready")
        assert reply.status == 200, reply.text
        assert reply.json()["status"] == "ready"
        assert reply.json()["limiter_healthy"] is False

    rid = uuid.uuid4().hex
    refused = chat(deny, model="limited", **{"x-request-id": rid})
    assert refused.status == 503, refused.text
    assert refused.json()["error"]["code"] == "limiter_unavailable"
    assert access_entry(deny, rid)["limiter"] == "unavailable"

    rid = uuid.uuid4().hex
    served = chat(allow, model="limited", **{"x-request-id": rid})
    assert served.status == 200, served.text
    assert " limiter=degraded " in pretty_line(allow, rid)


# --- the access log --------------------------------------------------------------------------


def test_every_access_line_is_json_with_the_documented_fields(gw: GatewayProcess):
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    cases = [
        # (request_id, reply, expected fields)
        (
            "ok",
            lambda rid: chat(gw, **auth, **{"x-request-id": rid}),
            {
                "status": 200,
                "target": "gpt",
                "provider": "gpt/0",
                "attempts": 1,
                "limiter": "none",
                "route": "/v1/chat/completions",
                "method": "POST",
                "client": "127.0.0.1",
                "key": "",
            },
        ),
        (
            # A key definition is named (never its token), also on an open target.
            "key-definition",
            lambda rid: chat(
                gw, model="open", authorization=f"Bearer {DEFINED_KEY}", **{"x-request-id": rid}
            ),
            {"status": 200, "target": "open", "key": "logs-team", "error": ""},
        ),
        (
            "wrong-key",
            lambda rid: chat(gw, authorization="Bearer sk-nope", **{"x-request-id": rid}),
            {
                "status": 401,
                "target": "gpt",
                "provider": "",
                "attempts": 0,
                "limiter": "none",
                "error": "invalid bearer token",
            },
        ),
        (
            "unknown",
            lambda rid: chat(gw, model="nope", **{"x-request-id": rid}),
            {"status": 404, "target": "unknown", "provider": "", "attempts": 0},
        ),
        (
            "upstream-503",
            lambda rid: chat(gw, model="open", **{"x-request-id": rid, "x-mock-status": "503"}),
            {"status": 503, "target": "open", "provider": "open/0", "attempts": 1},
        ),
        (
            "embeddings",
            lambda rid: request(
                gw, "POST", "/v1/embeddings", {"model": "limited", "input": "x"}, {"x-request-id": rid}
            ),
            {
                "status": 200,
                "target": "limited",
                "provider": "limited/0",
                "attempts": 1,
                "limiter": "allowed",
                "route": "/v1/embeddings",
            },
        ),
    ]
    tag = uuid.uuid4().hex[:8]
    for name, send, expected in cases:
        rid = f"{tag}-{name}"
        reply = send(rid)
        assert reply.status == expected["status"], (name, reply.text)
        entry = access_entry(gw, rid)
        assert set(entry) >= ACCESS_FIELDS, entry
        assert {k: entry[k] for k in expected} == expected, (name, entry)
        assert isinstance(entry["duration_ms"], int | float) and entry["duration_ms"] >= 0
        assert isinstance(entry["pid"], int) and entry["level"] == "info"
        # The body the client got, byte for byte: the gateway's own error bodies too.
        assert entry["bytes_out"] == len(reply.text.encode()), (name, entry)
    assert DEFINED_KEY not in gw.output()
    # The gateway's other log lines are JSON as well.
    worker_lines = [line for line in gw.output().splitlines() if '"logger":"onwards.app"' in line]
    assert worker_lines and all(json.loads(line)["msg"] == "worker ready" for line in worker_lines)


def test_request_id_is_kept_or_generated_and_travels_both_ways(gw: GatewayProcess, mock: MockUpstream):
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}

    def upstream_saw(rid: str) -> bool:
        return any(r.headers.get("x-request-id") == rid for r in mock.requests)

    # A sent id comes back, reaches the upstream and names the log line.
    sent = f"client-{uuid.uuid4().hex}"
    reply = chat(gw, **auth, **{"x-request-id": sent})
    assert reply.status == 200
    assert reply.header("x-request-id") == sent
    assert upstream_saw(sent)
    assert access_entry(gw, sent)["status"] == 200

    # Errors the gateway answers itself carry it too.
    sent = f"client-{uuid.uuid4().hex}"
    reply = chat(gw, authorization="Bearer sk-nope", **{"x-request-id": sent})
    assert reply.status == 401
    assert reply.header("x-request-id") == sent
    assert access_entry(gw, sent)["status"] == 401

    # No id, or one that is not 1-128 visible ASCII characters: a fresh one is made and used alike.
    for given in (None, "has space", "x" * 129):
        headers = dict(auth) if given is None else {**auth, "x-request-id": given}
        before = len(mock.requests)
        reply = chat(gw, **headers)
        assert reply.status == 200
        made = reply.header("x-request-id")
        assert re.fullmatch(r"[0-9a-f]{32}", made), made
        assert mock.requests[before].headers["x-request-id"] == made
        assert access_entry(gw, made)["status"] == 200


def test_the_client_gets_one_request_id_even_when_the_upstream_sends_its_own(gw: GatewayProcess):
    for given in (f"client-{uuid.uuid4().hex}", None):
        reply = chat(gw, model="own-id", **({} if given is None else {"x-request-id": given}))
        assert reply.status == 200, reply.text
        rid = reply.header("x-request-id")  # exactly one
        assert rid != UPSTREAM_REQUEST_ID
        if given is None:
            assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
        else:
            assert rid == given
        assert access_entry(gw, rid)["target"] == "own-id"


def test_keys_and_bodies_never_reach_the_log(gw: GatewayProcess, mock: MockUpstream):
    marker = "body-marker-" + secrets.token_hex(8)
    wrong_key = "sk-wrong-" + secrets.token_hex(8)
    good = {"authorization": f"Bearer {CLIENT_KEY}"}
    bad = {"authorization": f"Bearer {wrong_key}"}
    tag = uuid.uuid4().hex[:8]
    before = len(mock.requests)
    sends = [
        (200, lambda h: chat(gw, content=marker, **good, **h)),
        (401, lambda h: chat(gw, content=marker, **bad, **h)),
        (404, lambda h: chat(gw, model="no-such-model", content=marker, **bad, **h)),
        (400, lambda h: request(gw, "POST", "/v1/chat/completions", "{" + marker, {**good, **h})),
    ]
    for i, (status, send) in enumerate(sends):
        rid = f"{tag}-{i}"
        assert send({"x-request-id": rid}).status == status
        access_entry(gw, rid)  # the line is written: whatever it would leak is in the output now
    # The secrets really went through the gateway, so their absence below means something.
    seen = mock.requests[before:]
    assert len(seen) == 1 and marker.encode() in seen[0].body
    assert seen[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    output = gw.output()
    for secret in (CLIENT_KEY, UPSTREAM_KEY, wrong_key, marker):
        assert secret not in output, secret


def test_pretty_format_is_one_readable_line_per_request(redis_down: RedisDown):
    pretty = redis_down.allow  # no --log-format: pretty is the default
    marker = "body-marker-" + secrets.token_hex(8)
    rid = f"pretty-{uuid.uuid4().hex}"
    reply = chat(pretty, content=marker, authorization=f"Bearer {CLIENT_KEY}", **{"x-request-id": rid})
    assert reply.status == 200
    pattern = (
        r"\d\d:\d\d:\d\d\.\d{3} INFO +\[\d+\] onwards\.access: POST /v1/chat/completions 200  "
        rf"request_id={rid} client=127\.0\.0\.1 method=POST route=/v1/chat/completions status=200 "
        rf"target=gpt provider=gpt/0 attempts=1 limiter=none duration_ms=[0-9.]+ bytes_out={len(reply.text)}"
        r" prompt_tokens=\d+ completion_tokens=\d+"
    )
    found = pretty_line(pretty, rid)
    assert re.fullmatch(pattern, found), found
    # An error names its reason, and empty fields (provider) are left out.
    rid = f"pretty-{uuid.uuid4().hex}"
    assert chat(pretty, authorization="Bearer sk-nope", **{"x-request-id": rid}).status == 401
    found = pretty_line(pretty, rid)
    assert found.endswith(" error=invalid bearer token") and " provider=" not in found, found
    output = pretty.output()
    assert not any(line.startswith("{") for line in output.splitlines())
    for secret in (CLIENT_KEY, UPSTREAM_KEY, "sk-nope", marker):
        assert secret not in output, secret


def test_a_gateway_that_stops_writes_the_lines_it_still_buffered(mock: MockUpstream, tmp_path: Path):
    # Lines wait in a worker's buffer up to 100 ms; a stop right after the answer comes well within
    # that, so the line below is there only because the worker flushes on its way out.
    process = GatewayProcess(
        write_config(tmp_path / "config.json", mock), extra_args=["--log-format", "json", "--watch=false"]
    )
    rid = f"stop-{uuid.uuid4().hex}"
    with gateways(process):
        assert chat(process, model="open", **{"x-request-id": rid}).status == 200
        process.stop()
        entries = [e for e in access_entries(process) if e["request_id"] == rid]
        assert len(entries) == 1, process.describe()
        assert entries[0]["status"] == 200
