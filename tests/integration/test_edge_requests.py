"""The hardened edge on the request path, as real processes on loopback: traversal in every encoding,
slow bodies, an upstream that stalls mid-stream, the egress proxy and CORS."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.forward_proxy import ForwardProxy
from tests.support.mock_upstream import CHUNK_DELAY_HEADER, CHUNKS_HEADER, MockUpstream
from tests.support.processes import GatewayProcess

pytestmark = pytest.mark.integration

ORIGIN = "https://app.example.com"
CHAT = {"model": "open", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("edge") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("edge") / "config.json"
    config = {
        "cors": {"allowed_origins": [ORIGIN], "max_age_secs": 60},
        "targets": {
            "open": {"url": mock.url + "/base"},
            "stall": {
                "url": mock.url + "/v1",
                "stream_idle_timeout_secs": 0.5,
                "concurrency_limit": {"max_concurrent_requests": 1},
            },
        },
    }
    path.write_text(json.dumps(config))
    with GatewayProcess(path, workers=1, extra_args=["--body-timeout-secs", "1"]) as process:
        yield process


@pytest.fixture(autouse=True)
def _clear(mock: MockUpstream) -> None:
    mock.clear()


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 20) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side URL normalising) and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest


def post(path: str) -> bytes:
    body = json.dumps(CHAT).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../../b/v1/chat/completions",
        "/v1/%2e%2e/%2e%2e/b/v1/chat/completions",
        "/v1/%2E%2e/b/v1/chat/completions",
        "/v1/..%2fb/v1/chat/completions",
        "/v1/%252e%252e/b/v1/chat/completions",
        "/v1/..%5cb/v1/chat/completions",
        "/v1/..\\b/v1/chat/completions",
        "/v1/./chat/completions",
    ],
)
def test_traversal_variants_never_reach_the_upstream(gateway: GatewayProcess, mock: MockUpstream, path: str):
    status, body = raw_request(gateway.port, post(path))
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "invalid_path"
    assert mock.requests == []


def test_the_forwarded_path_is_base_plus_the_canonical_path(gateway: GatewayProcess, mock: MockUpstream):
    status, body = raw_request(gateway.port, post("/v1//chat/completions?x=%2e%2e"))
    assert status == 200, body
    [seen] = mock.requests
    assert seen.path == "/base/v1/chat/completions?x=%2e%2e"  # the query string untouched


def test_refused_paths_are_counted(gateway: GatewayProcess):
    raw_request(gateway.port, post("/v1/%2e%2e/x"))
    metrics = httpx.get(gateway.metrics_url, timeout=10).text
    line = next(
        ln for ln in metrics.splitlines() if ln.startswith('onwards_edge_refusals_total{reason="path"}')
    )
    assert float(line.split()[-1]) >= 1


def test_a_slow_body_gets_408(gateway: GatewayProcess, mock: MockUpstream):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    status, body = raw_request(gateway.port, head, b'{"model": "op')
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert mock.requests == []


def test_a_stalled_stream_ends_with_an_error_event_and_frees_its_permit(gateway: GatewayProcess):
    body = {**CHAT, "model": "stall", "stream": True}
    headers = {CHUNKS_HEADER: "3", CHUNK_DELAY_HEADER: "30"}
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200
        assert "event: error" in r.text and "stream_idle_timeout" in r.text
        # The target allows one request at a time: the stalled one's permit is back.
        ok = client.post(f"{gateway.url}/v1/chat/completions", json={**body, "stream": False})
        assert ok.status_code == 200, ok.text


def test_cors_preflight_allowed_and_refused(gateway: GatewayProcess, mock: MockUpstream):
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    with httpx.Client(timeout=10) as client:
        r = client.options(f"{gateway.url}/v1/chat/completions", headers=preflight)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-max-age"] == "60"
        refused = client.options(
            f"{gateway.url}/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "cors_not_allowed"
        answer = client.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Origin": ORIGIN})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        other = client.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
        assert "access-control-allow-origin" not in other.headers
    assert all(req.method != "OPTIONS" for req in mock.requests)


def test_without_cors_a_preflight_gets_a_clear_json_error(mock: MockUpstream, tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"targets": {"open": {"url": mock.url + "/v1"}}}))
    with GatewayProcess(path, workers=1) as gateway:
        r = httpx.options(
            f"{gateway.url}/v1/chat/completions",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert r.status_code == 405
        assert r.json()["error"]["code"] == "cors_disabled"
        plain = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Origin": ORIGIN})
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def _proxy_gateway(mock: MockUpstream, tmp_path: Path, env: dict[str, str], provider: dict) -> GatewayProcess:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"targets": {"open": {"url": mock.url + "/v1", **provider}}}))
    clean = {
        "HTTP_PROXY": "",
        "http_proxy": "",
        "HTTPS_PROXY": "",
        "https_proxy": "",
        "NO_PROXY": "",
        "no_proxy": "",
    }
    return GatewayProcess(path, workers=1, env={**clean, **env})


def test_http_proxy_is_honoured_and_reused(mock: MockUpstream, tmp_path: Path):
    with ForwardProxy() as proxy, _proxy_gateway(mock, tmp_path, {"HTTP_PROXY": proxy.url}, {}) as gateway:
        with httpx.Client(timeout=10) as client:
            for _ in range(5):
                assert client.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code == 200
        assert len(mock.requests) == 5
        assert proxy.first_lines and proxy.first_lines[0].startswith(f"POST {mock.url}/v1/chat/completions")
        assert proxy.connections == 1  # the pool kept its connection through the proxy


@pytest.mark.parametrize(
    ("env", "provider"),
    [({"NO_PROXY": "127.0.0.1"}, {}), ({"no_proxy": "*"}, {}), ({}, {"proxy": False})],
)
def test_proxy_bypassed(mock: MockUpstream, tmp_path: Path, env: dict[str, str], provider: dict):
    with ForwardProxy() as proxy:
        env = {"HTTP_PROXY": proxy.url, **env}
        with _proxy_gateway(mock, tmp_path, env, provider) as gateway:
            r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10)
            assert r.status_code == 200
        assert proxy.connections == 0 and len(mock.requests) == 1


def test_provider_proxy_wins_over_the_environment(mock: MockUpstream, tmp_path: Path):
    with ForwardProxy() as proxy:
        with _proxy_gateway(mock, tmp_path, {"NO_PROXY": "*"}, {"proxy": proxy.url}) as gateway:
            started = time.monotonic()
            r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10)
            assert r.status_code == 200, time.monotonic() - started
        assert proxy.connections == 1


class _TlsUpstream:
    """A tiny HTTPS upstream (self-signed for 127.0.0.1) answering any POST with a chat completion."""

    def __init__(self, cert: Path, key: Path) -> None:
        import http.server
        import ssl
        import threading

        body = json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode()
        seen: list[str] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # the stdlib calls it by this name
                self.rfile.read(int(self.headers.get("content-length") or 0))
                seen.append(self.path)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_https_upstream_goes_through_the_proxy_with_connect(tmp_path: Path):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    upstream = _TlsUpstream(cert, key)
    try:
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"targets": {"open": {"url": f"https://127.0.0.1:{upstream.port}/v1"}}}))
        with ForwardProxy() as proxy:
            env = {"HTTPS_PROXY": proxy.url, "NO_PROXY": "", "no_proxy": "", "SSL_CERT_FILE": str(cert)}
            with GatewayProcess(path, workers=1, env=env) as gateway, httpx.Client(timeout=10) as client:
                for _ in range(3):
                    r = client.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
                    assert r.status_code == 200, r.text
            assert proxy.first_lines == [f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1"]
            assert upstream.seen == ["/v1/chat/completions"] * 3
    finally:
        upstream.close()
