"""A Redis URL the limiter cannot use is loud: one line and exit 2 at start, /ready and a metric later.

Start: the CLI checks the URL before Granian starts (onwards/limits/redis/check.py), so a mistake
costs one line on stderr, no traceback, exit status 2. An unreachable Redis is not a mistake: the
gateway starts and serves under the failure policy. While running, a Redis that starts refusing the
credentials is reported once, in /ready (`limiter_problem`) and the `limiter_misconfigured` metric,
and cleared when it is fixed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.support.processes import REPO_ROOT, GatewayProcess, free_port, wait_until
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import sentinel_setup

pytestmark = [pytest.mark.integration, pytest.mark.redis]

CONFIG = {
    "targets": {
        "m": {"url": "http://127.0.0.1:9/v1", "rate_limit": {"requests_per_second": 1, "burst_size": 1}}
    }
}


def start_gateway(config: Path, url: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "onwards", "-f", str(config), "--redis-url", url]
    argv += [
        "--host",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "--workers",
        "1",
        "--metrics-port",
        str(free_port()),
    ]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    return path


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], names: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onwards: error: ") and names in lines[0], lines[0]


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("memcached://127.0.0.1:11211", "unsupported Redis URL scheme 'memcached'"),
        ("redis+cluster://127.0.0.1:7000,,127.0.0.1:7001", "empty entry in the node list"),
        ("redis://127.0.0.1:6379,127.0.0.1:6380", "node list needs redis+sentinel:// or redis+cluster://"),
        ("redis+cluster://127.0.0.1:7000/1", "Redis Cluster has only db 0"),
        ("redis+sentinel://127.0.0.1:26379", "needs the master's service name"),
    ],
)
def test_an_unusable_url_stops_the_start_with_one_line(config: Path, url: str, names: str) -> None:
    assert_one_line_exit_2(start_gateway(config, url), names)


def test_a_wrong_password_stops_the_start(config: Path) -> None:
    server = RedisServer(free_port(), ["--requirepass", "right"])
    server.url = f"redis://:right@127.0.0.1:{server.port}/0"  # for its own readiness check
    server.start()
    try:
        wrong = f"redis://:wrong@127.0.0.1:{server.port}/0"
        assert_one_line_exit_2(start_gateway(config, wrong), "refused the credentials")
        missing = f"redis://127.0.0.1:{server.port}/0"
        assert_one_line_exit_2(start_gateway(config, missing), "needs a password")
    finally:
        server.close()


@pytest.mark.slow
def test_a_sentinel_given_as_redis_url_or_an_unknown_service_stops_the_start(
    config: Path, tmp_path: Path
) -> None:
    with sentinel_setup(tmp_path) as setup:
        port = setup.sentinels[0].port
        assert_one_line_exit_2(start_gateway(config, f"redis://127.0.0.1:{port}/0"), "is a Redis Sentinel")
        unknown = f"redis+sentinel://127.0.0.1:{port}/nosuchservice"
        assert_one_line_exit_2(start_gateway(config, unknown), "knows no master named 'nosuchservice'")
        not_a_sentinel = f"redis+sentinel://127.0.0.1:{setup.master.port}/x"
        assert_one_line_exit_2(start_gateway(config, not_a_sentinel), "is not a Redis Sentinel")


def _ready(gateway: GatewayProcess) -> dict:
    with urllib.request.urlopen(f"{gateway.url}/ready", timeout=5) as response:
        return json.loads(response.read())


def _metric(gateway: GatewayProcess, name: str) -> float | None:
    with urllib.request.urlopen(gateway.metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_a_redis_that_starts_refusing_the_credentials_shows_in_ready_and_metrics(config: Path) -> None:
    server = RedisServer(free_port()).start()
    gateway = GatewayProcess(config, workers=1, redis_url=server.url, redis_prefix="misconf")
    try:
        gateway.start()
        assert _ready(gateway)["limiter_problem"] is None
        with redis.Redis(port=server.port) as admin:
            admin.config_set("requirepass", "s3cret")
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal")  # the gateway must log in again
        wait_until(
            lambda: _ready(gateway)["limiter_problem"], timeout=10, message="problem not shown in /ready"
        )
        problem = _ready(gateway)["limiter_problem"]
        assert "needs a password" in problem and "s3cret" not in problem
        wait_until(lambda: _metric(gateway, "onwards_limiter_misconfigured") == 1.0, timeout=10)
        with redis.Redis(port=server.port, password="s3cret") as admin:
            admin.config_set("requirepass", "")
        wait_until(
            lambda: _ready(gateway)["limiter_problem"] is None, timeout=10, message="problem not cleared"
        )
        wait_until(lambda: _metric(gateway, "onwards_limiter_misconfigured") == 0.0, timeout=10)
        assert gateway.output().count("Redis limiter misconfigured") == 1
    finally:
        gateway.close()
        server.close()
