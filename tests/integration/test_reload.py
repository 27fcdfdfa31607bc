"""Hot reload end to end: real gateway processes with several workers, real files, real Redis.

What a reload promises is that *every worker* serves the new config soon after the change.
A keep-alive connection would stay with one worker, so every probe here opens a fresh
connection (a new httpx client per request) and the kernel spreads them over the workers;
a config counts as taken only when many probes in a row all see it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from onwards.config.parse import content_version
from onwards.config.sources.redis import FOLLOWER_CLIENT_NAME
from tests.support.mock_upstream import MockUpstream
from tests.support.processes import REPO_ROOT, GatewayProcess, wait_until

pytestmark = pytest.mark.integration

CONVERGE_SECS = 3.0  # the promise: every worker serves a change within this
PROBES = 30  # consecutive fresh connections that must all agree
WORKERS = 2
# Building an SSL context costs ~50 ms; sharing one keeps a fresh client per probe cheap
# (it is never used: every URL here is plain http).
_TLS = ssl.create_default_context()


def target_config(upstream: MockUpstream, **target: Any) -> dict[str, Any]:
    return {"targets": {"m": {"url": f"{upstream.url}/v1", **target}}}


def served_by(gateway: GatewayProcess) -> str | None:
    """Which mock answered a chat request sent over a brand-new connection (None on failure)."""
    try:
        with httpx.Client(base_url=gateway.url, timeout=5.0, verify=_TLS) as client:
            response = client.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    text = response.json()["choices"][0]["message"]["content"]
    match = re.fullmatch(r"hello from (\S+)", text)
    return match.group(1) if match else None


def config_version(gateway: GatewayProcess) -> str | None:
    try:
        with httpx.Client(base_url=gateway.url, timeout=5.0, verify=_TLS) as client:
            return client.get("/health").json()["config_version"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def all_served_by(gateway: GatewayProcess, name: str, probes: int = PROBES) -> bool:
    return all(served_by(gateway) == name for _ in range(probes))


def all_at_version(gateway: GatewayProcess, version: str, probes: int = PROBES) -> bool:
    return all(config_version(gateway) == version for _ in range(probes))


def converge(gateways: list[GatewayProcess], name: str, version: str, since: float) -> float:
    """Wait until every gateway serves `name` at `version` on every probe of a round.

    Returns the seconds from `since` to the start of the first round in which every probe
    agreed (the time the probes themselves take is not counted against the gateway).
    """
    deadline = time.monotonic() + CONVERGE_SECS + 5.0
    while True:
        round_start = time.monotonic()
        if all(all_served_by(g, name) and all_at_version(g, version) for g in gateways):
            return round_start - since
        if time.monotonic() > deadline:
            details = "\n".join(g.describe() for g in gateways)
            raise AssertionError(f"gateways did not all switch to {name!r} at {version}\n{details}")
        time.sleep(0.05)


def stays(gateway: GatewayProcess, name: str, version: str, secs: float = 1.5) -> None:
    """`name` at `version` keeps being served on every probe for `secs`."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        assert served_by(gateway) == name
        assert config_version(gateway) == version


def start_file_gateway(gateway: Callable[..., GatewayProcess], path: Path) -> GatewayProcess:
    process = gateway(path, workers=WORKERS, extra_args=["--no-metrics"])
    # /health answered once; make sure the other workers are past their start too.
    wait_until(lambda: all(served_by(process) for _ in range(10)), timeout=10.0)
    return process


def test_every_worker_follows_file_edits(gateway, mock_upstream_factory, write_config) -> None:
    a, b = mock_upstream_factory("a"), mock_upstream_factory("b")
    path = write_config(target_config(a))
    process = start_file_gateway(gateway, path)
    assert all_served_by(process, "a")
    assert all_at_version(process, content_version(path.read_bytes()))

    # Write-to-temp-then-rename, as editors and deploy tools do.
    written = time.monotonic()
    write_config(target_config(b))
    took = converge([process], "b", content_version(path.read_bytes()), written)
    assert took < CONVERGE_SECS, f"took {took:.2f}s"

    # In-place rewrite of the same file.
    raw = json.dumps(target_config(a)).encode()
    written = time.monotonic()
    path.write_bytes(raw)
    took = converge([process], "a", content_version(raw), written)
    assert took < CONVERGE_SECS, f"took {took:.2f}s"

    # Deleted, then back: the gateway keeps serving meanwhile and follows the new file.
    path.unlink()
    stays(process, "a", content_version(raw), secs=0.5)
    raw = json.dumps(target_config(b)).encode()
    written = time.monotonic()
    path.write_bytes(raw)
    took = converge([process], "b", content_version(raw), written)
    assert took < CONVERGE_SECS, f"took {took:.2f}s"


def test_invalid_edits_are_refused_and_the_old_config_keeps_serving(
    gateway, mock_upstream_factory, write_config
) -> None:
    a, b = mock_upstream_factory("a"), mock_upstream_factory("b")
    path = write_config(target_config(a))
    good_version = content_version(path.read_bytes())
    process = start_file_gateway(gateway, path)

    path.write_text('{"targets": {"m": {"url": ')  # broken JSON
    wait_until(lambda: process.output().count("invalid JSON") >= WORKERS, timeout=CONVERGE_SECS + 2)
    stays(process, "a", good_version)

    # Valid JSON, invalid field (pointing at the other mock, so taking it would show).
    write_config(target_config(b, rate_limit={"requests_per_second": 0}))
    field = "targets.m.rate_limit.requests_per_second"
    wait_until(lambda: process.output().count(field) >= WORKERS, timeout=CONVERGE_SECS + 2)
    stays(process, "a", good_version)

    output = process.output()
    # One refusal per worker and change, each naming the file; not one per re-read.
    assert output.count("invalid JSON") == WORKERS, output
    assert output.count(field) == WORKERS, output
    assert all(str(path) in line for line in output.splitlines() if field in line or "invalid JSON" in line)
    assert process.is_running()

    written = time.monotonic()
    fixed = write_config(target_config(b))
    took = converge([process], "b", content_version(fixed.read_bytes()), written)
    assert took < CONVERGE_SECS, f"took {took:.2f}s"


def test_a_worker_respawned_while_the_file_is_broken_serves_the_last_good_config(
    gateway, mock_upstream_factory, write_config
) -> None:
    a, b = mock_upstream_factory("a"), mock_upstream_factory("b")
    path = write_config(target_config(a))
    process = start_file_gateway(gateway, path)
    # A newer good config, taken by every worker, then a broken one.
    write_config(target_config(b))
    good = content_version(path.read_bytes())
    converge([process], "b", good, time.monotonic())
    path.write_text('{"targets": ')
    wait_until(lambda: process.output().count("invalid JSON") >= WORKERS, timeout=CONVERGE_SECS + 2)

    # A worker dies and Granian starts a new one, which reads the broken file at its start.
    victim = process.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in process.worker_pids() and len(process.worker_pids()) >= WORKERS,
        timeout=15,
        message="worker was not respawned",
    )
    # It starts on the newest good config its siblings serve, and the gateway stays up.
    wait_until(
        lambda: process.output().count("worker ready") > WORKERS,
        timeout=15,
        message="the respawned worker did not start",
    )
    assert "serving the last good config" in process.output()
    converge([process], "b", good, time.monotonic())
    assert process.is_running()


# -- config in Redis ---------------------------------------------------------------------------


def config_command(*args: str, redis_url: str, prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onwards", "config", *args, "--redis-url", redis_url, "--prefix", prefix],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def push(path: Path, redis_url: str, prefix: str) -> str:
    """`onwards config push` in a subprocess; the version it printed."""
    result = config_command("push", "-f", str(path), redis_url=redis_url, prefix=prefix)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    match = re.search(r"\bversion (v\d+-[0-9a-f]+)\b", result.stdout)
    assert match, result.stdout
    return match.group(1)


@pytest.fixture
def redis_prefix(redis_url: str, unique_prefix: str) -> Iterator[str]:
    """The test's own prefix; everything stored under it is deleted at the end."""
    yield unique_prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{unique_prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def start_redis_gateway(
    gateway: Callable[..., GatewayProcess], redis_url: str, prefix: str
) -> GatewayProcess:
    process = gateway(
        None,
        workers=WORKERS,
        redis_url=redis_url,
        extra_args=["--config-from-redis", "--redis-prefix", prefix, "--no-metrics"],
    )
    wait_until(lambda: all(served_by(process) for _ in range(10)), timeout=10.0)
    return process


@pytest.mark.redis
def test_gateways_following_redis_converge_after_a_push(
    gateway, mock_upstream_factory, write_config, redis_url, redis_prefix
) -> None:
    a, b = mock_upstream_factory("a"), mock_upstream_factory("b")
    first = push(write_config(target_config(a)), redis_url, redis_prefix)
    gateways = [start_redis_gateway(gateway, redis_url, redis_prefix) for _ in range(2)]
    for process in gateways:
        assert all_served_by(process, "a")
        assert all_at_version(process, first)

    written = time.monotonic()
    second = push(write_config(target_config(b)), redis_url, redis_prefix)
    assert second != first and second.startswith("v2-")
    took = converge(gateways, "b", second, written)
    assert took < CONVERGE_SECS, f"took {took:.2f}s"

    # A push of an invalid file is refused by the command itself and reaches nobody.
    bad = write_config(target_config(a, rate_limit={"requests_per_second": 0}), "bad.json")
    result = config_command("push", "-f", str(bad), redis_url=redis_url, prefix=redis_prefix)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "targets.m.rate_limit.requests_per_second" in result.stderr
    assert "Traceback" not in result.stderr
    for process in gateways:
        stays(process, "b", second, secs=0.5)

    shown = config_command("show", redis_url=redis_url, prefix=redis_prefix)
    assert shown.returncode == 0
    assert f"version:   {second}" in shown.stdout


@pytest.mark.redis
def test_follower_that_lost_its_connection_catches_up(
    gateway, mock_upstream_factory, write_config, redis_url, redis_prefix
) -> None:
    a, b, c = (mock_upstream_factory(name) for name in "abc")
    push(write_config(target_config(a)), redis_url, redis_prefix)
    process = start_redis_gateway(gateway, redis_url, redis_prefix)
    admin = redis.Redis.from_url(redis_url)
    name = f"{FOLLOWER_CLIENT_NAME}:{redis_prefix}"

    def follower_connections(kind: str | None = None) -> list[str]:
        clients = admin.client_list(_type=kind) if kind else admin.client_list()
        return [entry["id"] for entry in clients if entry.get("name") == name]

    try:
        # One subscription per worker.
        wait_until(lambda: len(follower_connections("pubsub")) == WORKERS, timeout=10.0)
        for round_, upstream in enumerate((b, c, b)):
            old = follower_connections()
            for client_id in old:
                admin.execute_command("CLIENT", "KILL", "ID", client_id)
            # Pushed at once, while the followers are reconnecting: the notice goes nowhere.
            written = time.monotonic()
            version = push(write_config(target_config(upstream)), redis_url, redis_prefix)
            took = converge([process], upstream.name, version, written)
            assert took < CONVERGE_SECS + 2.0, f"round {round_}: took {took:.2f}s"
            # Every worker is subscribed again, on new connections.
            wait_until(lambda: len(follower_connections("pubsub")) == WORKERS, timeout=10.0)
            assert not set(follower_connections("pubsub")) & set(old)
    finally:
        admin.close()


@pytest.mark.redis
def test_a_worker_respawned_while_redis_is_down_serves_the_last_good_config(
    gateway, mock_upstream_factory, write_config, private_redis, unique_prefix
) -> None:
    a = mock_upstream_factory("a")
    server = private_redis(None)
    pushed = push(write_config(target_config(a)), server.url, unique_prefix)
    process = gateway(
        None,
        workers=WORKERS,
        extra_args=[
            "--no-metrics",
            "--config-from-redis",
            "--redis-url",
            server.url,
            "--redis-prefix",
            unique_prefix,
        ],
    )
    converge([process], "a", pushed, time.monotonic())

    server.kill()  # the config store is gone; the workers keep serving what they have
    victim = process.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: process.output().count("worker ready") > WORKERS,
        timeout=15,
        message="the respawned worker did not start while Redis was down",
    )
    assert "serving the last good config" in process.output()
    converge([process], "a", pushed, time.monotonic())
    assert process.is_running()
