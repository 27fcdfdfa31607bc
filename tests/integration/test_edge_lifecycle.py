"""Process lifecycle as real processes on loopback: parent death, busy ports, bad input, graceful drain."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.mock_upstream import CHUNK_DELAY_HEADER, CHUNKS_HEADER, HANG_HEADER, MockUpstream
from tests.support.processes import REPO_ROOT, GatewayProcess, _proc_stat, free_port, http_status, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("edge") as upstream:
        yield upstream


@pytest.fixture
def config_path(mock: MockUpstream, tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "targets": {
                    "open": {"url": mock.url + "/v1"},
                    "limited": {"url": mock.url + "/v1", "concurrency_limit": {"max_concurrent_requests": 1}},
                }
            }
        )
    )
    return path


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onwards", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


class StreamReader(threading.Thread):
    """Reads one streamed completion through the gateway in the background."""

    def __init__(self, url: str, model: str, chunks: int, chunk_delay: float) -> None:
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.headers = {CHUNKS_HEADER: str(chunks), CHUNK_DELAY_HEADER: str(chunk_delay)}
        self.started = threading.Event()
        self.body = b""
        self.status: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {"model": self.model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        try:
            with (
                httpx.Client(timeout=60) as client,
                client.stream(
                    "POST", f"{self.url}/v1/chat/completions", json=body, headers=self.headers
                ) as r,
            ):
                self.status = r.status_code
                for chunk in r.iter_raw():
                    self.body += chunk
                    self.started.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.started.set()


def test_workers_exit_when_the_main_process_is_killed(config_path: Path):
    gateway = GatewayProcess(config_path, workers=2).start()
    try:
        workers = gateway.worker_pids()
        assert len(workers) == 2
        gateway.send_signal(signal.SIGKILL)
        # They notice within PARENT_POLL_S and are gone within 2 s; 10 s only guards a loaded machine.
        wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=10)
        # The port is free again: a new gateway starts on it without --reuse-port.
        second = GatewayProcess(config_path, workers=1, port=gateway.port).start()
        second.close()
    finally:
        gateway.close()


def test_a_busy_port_stops_the_start_with_one_line(config_path: Path):
    with GatewayProcess(config_path, workers=1) as first:
        done = _run_cli("-f", str(config_path), "--host", "127.0.0.1", "-p", str(first.port), "--no-metrics")
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "already in use" in lines[0] and "--reuse-port" in lines[0]
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["-p", "70000"], {}, "at most 65535"),
        (["-p", "port"], {}, "expected a number"),
        ([], {"ONWARDS_LOG_LEVEL": "loud"}, "ONWARDS_LOG_LEVEL"),
        ([], {"ONWARDS_DRAIN_SECS": "-1"}, "ONWARDS_DRAIN_SECS"),
        (["--body-timeout-secs", "0"], {}, "at least"),
    ],
)
def test_bad_flags_and_environment_give_one_line(config_path: Path, args, env, words):
    import os

    done = _run_cli("-f", str(config_path), *args, env={**os.environ, **env})
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "onwards: error:" in line]) == 1


def test_sigterm_drains_then_lets_a_stream_finish(config_path: Path):
    gateway = GatewayProcess(
        config_path, workers=2, extra_args=["--drain-secs", "5", "--shutdown-timeout-secs", "30"]
    ).start()
    try:
        stream = StreamReader(gateway.url, "open", chunks=8, chunk_delay=0.5)
        stream.start()
        assert stream.started.wait(20)
        gateway.send_signal(signal.SIGTERM)
        # Not ready at once, while still serving new connections during the drain.
        wait_until(lambda: http_status(gateway.host, gateway.port, "/ready") == 503, timeout=10)
        assert http_status(gateway.host, gateway.port, "/health") == 200
        stream.join(60)
        assert stream.error is None and stream.status == 200
        assert stream.body.rstrip().endswith(b"data: [DONE]")
        assert gateway._proc is not None
        assert gateway._proc.wait(60) == 0, gateway.describe()
        # After the drain the port refuses connections (nothing listens any more).
        assert http_status(gateway.host, gateway.port, "/health") is None
    finally:
        gateway.close()


def test_a_stream_past_the_shutdown_timeout_is_cut_logged_and_releases_its_permit(
    mock: MockUpstream, tmp_path: Path, redis_url: str, unique_prefix: str
):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "targets": {
                    "limited": {"url": mock.url + "/v1", "concurrency_limit": {"max_concurrent_requests": 1}}
                }
            }
        )
    )
    gateway = GatewayProcess(
        path,
        workers=1,
        redis_url=redis_url,
        redis_prefix=unique_prefix,
        extra_args=["--drain-secs", "0.2", "--shutdown-timeout-secs", "1"],
    ).start()
    client = redis.Redis.from_url(redis_url)
    try:
        stream = StreamReader(gateway.url, "limited", chunks=400, chunk_delay=0.25)
        stream.start()
        assert stream.started.wait(20)
        held = [k for k in client.scan_iter(f"{unique_prefix}*") if b":cc:" in k]
        assert held and client.zcard(held[0]) == 1
        gateway.send_signal(signal.SIGTERM)
        assert gateway._proc is not None
        code = gateway._proc.wait(60)
        stream.join(30)
        assert code == 3, gateway.describe()  # the exit status says a request was cut
        assert not stream.body.rstrip().endswith(b"data: [DONE]")
        out = gateway.output()
        assert "1 request cut at shutdown" in out
        access = [line for line in out.splitlines() if "/v1/chat/completions" in line]
        assert any("cut at shutdown" in line and "503" in line for line in access), out
        assert client.zcard(held[0]) == 0  # the permit went back before the worker exited
    finally:
        client.close()
        gateway.close()


def test_a_request_still_waiting_for_its_upstream_gets_503_when_cut(config_path: Path):
    gateway = GatewayProcess(
        config_path, workers=1, extra_args=["--drain-secs", "0.1", "--shutdown-timeout-secs", "0.5"]
    ).start()
    answer: dict[str, httpx.Response] = {}

    def call() -> None:
        answer["r"] = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "open", "messages": []},
            headers={HANG_HEADER: "1"},
            timeout=60,
        )

    try:
        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        wait_until(lambda: _waiting(gateway), timeout=20)
        gateway.send_signal(signal.SIGTERM)
        thread.join(60)
        r = answer["r"]
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        assert gateway._proc is not None and gateway._proc.wait(60) == 3
    finally:
        gateway.close()


def _waiting(gateway: GatewayProcess) -> bool:
    metrics = httpx.get(gateway.metrics_url, timeout=5).text
    return any(
        ln.startswith("onwards_requests_in_flight ") and float(ln.split()[-1]) >= 1
        for ln in metrics.splitlines()
    )


def test_reuse_port_allows_sharing_on_purpose(config_path: Path):
    with GatewayProcess(config_path, workers=1) as first:
        second = GatewayProcess(config_path, workers=1, port=first.port, extra_args=["--reuse-port"])
        second.start()
        second.close()


def test_time_to_notice_a_dead_parent_is_short(config_path: Path):
    """A loose figure for the docs: workers gone well within a few seconds of SIGKILL."""
    gateway = GatewayProcess(config_path, workers=1, port=free_port()).start()
    try:
        workers = gateway.worker_pids()
        killed = time.monotonic()
        gateway.send_signal(signal.SIGKILL)
        wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=10)
        assert time.monotonic() - killed < 10
    finally:
        gateway.close()
