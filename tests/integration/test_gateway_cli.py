"""The real `onwards` command: Granian with two workers, driven by the OpenAI SDK and plain HTTP.

One gateway and one mock upstream serve the whole module, since starting workers costs seconds;
tests that need other flags start their own process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from onwards import __version__
from onwards.cli import build_parser, settings_from_args
from tests.support.mock_upstream import MockUpstream
from tests.support.processes import (
    REPO_ROOT,
    GatewayProcess,
    ManagedProcess,
    free_port,
    http_status,
    wait_until,
)

pytestmark = pytest.mark.integration

CLIENT_KEY = "sk-client-key"
UPSTREAM_KEY = "sk-upstream-key"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("mock") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def config_path(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gateway") / "config.json"
    config = {
        "targets": {
            "gpt": {"url": mock.url + "/v1", "onwards_key": UPSTREAM_KEY, "keys": [CLIENT_KEY]},
            "open": {"url": mock.url + "/v1"},
            "hidden": {"url": mock.url + "/v1", "keys": ["sk-someone-else"]},
        }
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def gateway(config_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(config_path, workers=2)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- {process.describe()}")
        process.close()


@pytest.fixture
def sdk(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    with client:
        yield client


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onwards", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------------------------
# The OpenAI SDK through two workers


def test_two_workers_serve(gateway: GatewayProcess):
    assert len(gateway.worker_pids()) == 2, gateway.describe()


def test_chat_completion(sdk: openai.OpenAI, mock: MockUpstream):
    before = mock.request_count
    completion = sdk.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "say hi"}])
    assert completion.choices[0].message.content == "hello from mock"
    assert completion.model == "gpt"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    seen = mock.requests[before]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert seen.headers["user-agent"].startswith("OpenAI/Python")


def test_streaming_chunks_arrive_as_the_upstream_sends_them(sdk: openai.OpenAI):
    stream = sdk.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        extra_headers={"x-mock-chunks": "5", "x-mock-chunk-delay": "0.2"},
    )
    arrivals: list[float] = []
    text = ""
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "hello from mock"
    assert len(arrivals) == 5
    # The upstream spreads five chunks over 0.8 s; a buffering gateway would deliver them at once.
    assert arrivals[-1] - arrivals[0] >= 0.5


def test_encoded_path_and_query_reach_the_upstream_unchanged(gateway: GatewayProcess, mock: MockUpstream):
    # The path arrives canonical (issue 12: an escape that needs none is decoded; encoded slashes
    # are refused, see test_edge_requests.py); the query string exactly as sent.
    path = "/v1/files/a%3Ab/caf%C3%A9%20x?q=%20&r=%2F"
    r = httpx.get(gateway.url + path, headers={"model-override": "open"}, timeout=5)
    assert r.status_code == 200, r.text
    assert mock.requests[-1].path == "/v1/files/a:b/caf%C3%A9%20x?q=%20&r=%2F"


def test_embeddings(sdk: openai.OpenAI):
    result = sdk.embeddings.create(model="gpt", input=["first", "second"])
    assert [item.index for item in result.data] == [0, 1]
    assert result.data[1].embedding == [1.0, 0.5, -0.5]


def test_models_list_shows_what_the_key_may_use(sdk: openai.OpenAI, gateway: GatewayProcess):
    assert sorted(model.id for model in sdk.models.list()) == ["gpt", "open"]
    anonymous = httpx.get(gateway.url + "/v1/models", timeout=5)
    assert [m["id"] for m in anonymous.json()["data"]] == ["open"]


def test_wrong_key_is_an_authentication_error(gateway: GatewayProcess, mock: MockUpstream):
    before = mock.request_count
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=10)
    with client, pytest.raises(openai.AuthenticationError) as exc:
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 401
    assert exc.value.code == "invalid_api_key"
    assert mock.request_count == before


def test_unknown_model_is_not_found(sdk: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as exc:
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.code == "model_not_found"


def test_client_disconnect_mid_stream_reaches_the_upstream(gateway: GatewayProcess, mock: MockUpstream):
    before = mock.disconnects
    body = {"model": "open", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    # After the first event the upstream stays silent for 5 s, so only a gateway that watches its
    # client (rather than noticing on its next write) can pass the disconnect on within 2 s.
    headers = {"x-mock-chunks": "3", "x-mock-chunk-delay": "5"}
    url = gateway.url + "/v1/chat/completions"
    with httpx.Client(timeout=10) as client, client.stream("POST", url, json=body, headers=headers) as r:
        assert r.status_code == 200
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
    # Leaving the block closed the connection mid-stream.
    left = time.monotonic()
    wait_until(
        lambda: mock.disconnects > before, timeout=2.0, message="the upstream never saw the client leave"
    )
    assert time.monotonic() - left < 2.0


def test_metrics_are_served_by_default(gateway: GatewayProcess):
    assert http_status(gateway.host, gateway.metrics_port, "/metrics") == 200


# ---------------------------------------------------------------------------------------------
# The command line


def test_bad_config_exits_with_one_line_naming_file_and_field(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"targets": {"gpt": {"providers": [{"url": "ftp://example.com"}]}}}))
    result = run_cli("-f", str(bad), "-p", str(free_port()), "--metrics-port", str(free_port()))
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert str(bad) in lines[0]
    assert "targets.gpt.providers[0].url" in lines[0]


def test_missing_config_file_is_one_line(tmp_path: Path):
    missing = tmp_path / "missing.json"
    result = run_cli("-f", str(missing))
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert output.splitlines() == [f"onwards: error: Config file '{missing}' does not exist"]


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"onwards {__version__}"


def test_module_help():
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: onwards")
    for flag in ("--targets", "--port", "--workers", "--metrics", "--watch", "--redis-url"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "metrics", "watch"),
    [
        (["--metrics", "false"], False, True),
        (["--metrics=false"], False, True),
        (["--no-metrics"], False, True),
        (["-m", "false"], False, True),
        (["--metrics"], True, True),
        (["--watch=false"], True, False),
        (["--watch", "false"], True, False),
        (["--no-watch"], True, False),
        (["-w", "no"], True, False),
        (["--watch=true", "--metrics=0"], False, True),
    ],
)
def test_boolean_flags_parse(args, metrics, watch, monkeypatch):
    for name in ("ONWARDS_METRICS", "ONWARDS_WATCH"):
        monkeypatch.delenv(name, raising=False)
    parser = build_parser()
    settings = settings_from_args(parser.parse_args(["-f", "config.json", *args]), parser)
    assert (settings.metrics, settings.watch) == (metrics, watch)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [([], None, True), (["--no-gc-tuning"], None, False), ([], "false", False), (["--gc-tuning"], "0", True)],
)
def test_gc_tuning_is_on_unless_turned_off(args, env, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv("ONWARDS_GC_TUNING", raising=False)
    else:
        monkeypatch.setenv("ONWARDS_GC_TUNING", env)
    parser = build_parser()
    settings = settings_from_args(parser.parse_args(["-f", "config.json", *args]), parser)
    assert settings.gc_tuning is expected


def test_boolean_flag_rejects_other_words():
    result = run_cli("-f", "config.json", "--metrics", "maybe")
    assert result.returncode == 2
    assert "expected true or false" in result.stderr


def test_metrics_false_serves_without_a_metrics_listener(config_path: Path):
    process = GatewayProcess(config_path, workers=1, extra_args=["--metrics", "false", "--watch=false"])
    with process:
        assert http_status(process.host, process.port, "/health") == 200
        assert http_status(process.host, process.metrics_port, "/metrics") is None


def test_port_from_environment(config_path: Path):
    port = free_port()
    argv = [sys.executable, "-m", "onwards", "-f", str(config_path), "--host", "127.0.0.1", "--no-metrics"]
    process = ManagedProcess(argv, env={"ONWARDS_PORT": str(port)})
    process.launch()
    try:
        process.wait_ready(lambda: http_status("127.0.0.1", port, "/health") == 200, timeout=20)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "open", "messages": [{"role": "user", "content": "hi"}]},
            timeout=5,
        )
        assert r.status_code == 200, r.text
    finally:
        process.close()
