"""deploy/local/topology.py: nginx in front of 2 replicas (2 workers each) sharing one Redis.

Everything is asserted through the load balancer: limits hold exactly across replicas, one
`onwards config push` reaches both, both export metrics, and a rolling restart under steady load
loses no request at the client.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import load_topology
from tests.support.processes import LOOPBACK, REPO_ROOT, child_pids, free_port, wait_until

topology = load_topology()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(topology.find_binary("nginx") is None, reason="nginx is not installed"),
    pytest.mark.skipif(topology.find_binary("redis-server") is None, reason="redis-server is not installed"),
    pytest.mark.timeout(240),
]

CONFIG: dict[str, Any] = {
    "targets": {
        "demo": {"url": "mock://", "mock": {"delay_ms": 20, "stream_delay_ms": 2}},
        # Ten tokens, refilled once in ~17 minutes: exactly ten requests pass during the test.
        "limited": {"url": "mock://", "rate_limit": {"requests_per_second": 0.001, "burst_size": 10}},
        # Three permits; answers take long enough that all eight requests overlap.
        # Long enough to be in flight when its replica gets SIGTERM.
        "linger": {"url": "mock://", "mock": {"delay_ms": 3000}},
        "slow": {
            "url": "mock://",
            "mock": {"delay_ms": 6000},
            "concurrency_limit": {"max_concurrent_requests": 3},
        },
    }
}


def drain_flags() -> list[str]:
    """The graceful-drain flags, when this gateway has them (issue 12)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "onwards", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return ["--drain-secs", "1"] if "--drain-secs" in help_text else []


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    state = tmp_path_factory.mktemp("local-topology")
    config = state / "config.json"
    config.write_text(json.dumps(CONFIG))
    lb, redis_port = free_port(), free_port()
    first_ports = _port_pairs(2, avoid=(lb, redis_port))
    t = topology.Topology(
        config=config,
        port=lb,
        replicas=2,
        workers=2,
        redis_port=redis_port,
        # Replica i listens on first_port + i: both neighbours must be free.
        first_port=first_ports[0],
        first_metrics_port=first_ports[1],
        state_dir=state / "run",
        gateway_args=drain_flags(),
    )
    with t:
        yield t
    for log in sorted((state / "run").glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


def _port_pairs(count: int, avoid: tuple[int, ...] = ()) -> list[int]:
    """`count` ports p, each with p + 1 free too, all 2 * count ports distinct and not in `avoid`."""
    taken: set[int] = set(avoid)
    firsts: list[int] = []
    while len(firsts) < count:
        port = free_port()
        pair = {port, port + 1}
        if port < 65535 and not pair & taken and _is_free(port + 1):
            taken |= pair
            firsts.append(port)
    return firsts


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def chat(
    port: int, model: str, *, stream: bool = False, timeout: float = 30, key: str | None = None
) -> tuple[int, bytes]:
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "stream": stream}
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def metric(metrics_port: int, family: str, **labels: str) -> float:
    """The sum of a replica's samples of `family` (counters without their _total) matching `labels`."""
    conn = http.client.HTTPConnection(LOOPBACK, metrics_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = 0.0
    for found in text_string_to_metric_families(text):
        if found.name == family:
            total += sum(
                s.value
                for s in found.samples
                if s.name in (family, family + "_total")
                and all(s.labels.get(k) == v for k, v in labels.items())
            )
    return total


def served(metrics_port: int, target: str) -> float:
    """Requests a replica answered for `target`, summed over statuses."""
    return metric(metrics_port, "onwards_requests", target=target)


def in_flight(metrics_port: int) -> float:
    """Requests a replica is serving right now (summed over its workers)."""
    return metric(metrics_port, "onwards_requests_in_flight")


def counted(topo: Any, target: str, expected: list[float]) -> None:
    """Wait until each replica has counted `expected[i]` requests for `target`: a request is counted
    after its last byte is sent, so the client can see the answer a moment before the count."""
    wait_until(
        lambda: [served(n.metrics_port, target) for n in topo.nodes] == expected,
        timeout=15,
        message=f"{target}: counts never became {expected}",
    )


def test_rate_limit_is_exact_across_replicas(topo):
    statuses = Counter(chat(topo.port, "limited")[0] for _ in range(30))
    assert statuses == {200: 10, 429: 20}
    # Round robin sent half of them to each replica: the limit held across both, not per replica.
    counted(topo, "limited", [15, 15])


def test_concurrency_limit_is_exact_across_replicas(topo):
    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(status for status, _ in pool.map(lambda _: chat(topo.port, "slow"), range(8)))
    assert statuses == {200: 3, 429: 5}
    wait_until(lambda: sum(served(n.metrics_port, "slow") for n in topo.nodes) == 8, timeout=15)
    assert all(served(n.metrics_port, "slow") > 0 for n in topo.nodes)


def test_config_push_reaches_both_replicas(topo, tmp_path: Path):
    config = json.loads(json.dumps(CONFIG))
    config["targets"]["added"] = {"url": "mock://", "mock": {"reply": "pushed once"}}
    path = tmp_path / "next.json"
    path.write_text(json.dumps(config))
    reloads = [metric(n.metrics_port, "onwards_config_reloads", result="ok") for n in topo.nodes]
    output = topo.push_config(path)
    version = re.search(r"as version (\S+)", output)
    assert version, output
    for node, before in zip(topo.nodes, reloads, strict=True):
        # Every worker of every replica reloads once.
        wait_until(
            lambda node=node, before=before: (
                metric(node.metrics_port, "onwards_config_reloads", result="ok") == before + topo.workers
            ),
            timeout=20,
            message=f"replica {node.index} did not reload in every worker",
        )
        assert get_json(node.port, "/health")["config_version"] == version.group(1)
    answers = [chat(topo.port, "added") for _ in range(6)]
    assert [status for status, _ in answers] == [200] * 6
    assert {json.loads(body)["choices"][0]["message"]["content"] for _, body in answers} == {"pushed once"}
    counted(topo, "added", [3, 3])


def test_both_replicas_export_metrics(topo):
    before = [served(n.metrics_port, "demo") for n in topo.nodes]
    for _ in range(10):
        assert chat(topo.port, "demo")[0] == 200
    counted(topo, "demo", [b + 5 for b in before])


class SteadyLoad:
    """Four clients (two whole, two streamed) calling `demo` through nginx until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.failures: list[str] = []
        self.successes = Counter[str]()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i % 2 == 1,), daemon=True) for i in range(4)
        ]

    def _client(self, stream: bool) -> None:
        while not self._stop.is_set():
            try:
                status, body = chat(self.port, "demo", stream=stream)
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            complete = body.endswith(b"data: [DONE]\n\n") if stream else body.startswith(b'{"id"')
            if status != 200 or not complete:
                self.failures.append(f"{status}: {body[-200:]!r}")
            else:
                self.successes["stream" if stream else "whole"] += 1

    def carried(self, extra: int) -> None:
        """Wait until `extra` more requests have succeeded."""
        seen = sum(self.successes.values())
        wait_until(
            lambda: sum(self.successes.values()) >= seen + extra, timeout=30, message="the load stalled"
        )

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        self.carried(20)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_rolling_restart_under_load_loses_no_request(topo):
    first, second = topo.nodes
    with SteadyLoad(topo.port) as load:
        # Step by step for the first replica, with one long request on it when SIGTERM arrives.
        topo.set_rotation(out={first.index})
        lingering: list[tuple[int, bytes]] = []
        linger = threading.Thread(target=lambda: lingering.append(chat(first.port, "linger")))
        linger.start()
        # Out of rotation, the replica's only request is the lingering one.
        wait_until(lambda: in_flight(first.metrics_port) >= 1, timeout=30)
        assert topo.stop_replica(first.index) == 0, first.proc.tail()
        linger.join(30)
        assert lingering and lingering[0][0] == 200, lingering
        load.carried(10)  # the other replica carries the load alone
        topo.start_replica(first.index)
        topo.set_rotation(out=set())
        wait_until(
            lambda: served(first.metrics_port, "demo") >= 5, timeout=30, message="no traffic after restart"
        )
        # The second replica in one call, as a user would roll it.
        assert topo.restart_replica(second.index) == 0, second.proc.tail()
        wait_until(
            lambda: served(second.metrics_port, "demo") >= 5, timeout=30, message="no traffic after restart"
        )
        load.carried(10)
    assert load.failures == []
    assert load.successes["stream"] > 0 and load.successes["whole"] > 0


@pytest.mark.skipif(not drain_flags(), reason="this gateway has no graceful drain (--drain-secs, issue 12)")
def test_sigterm_with_the_drain_settings_behind_nginx_loses_no_request(topo):
    """With the drain, a replica left in nginx's rotation may simply get SIGTERM: it serves through
    --drain-secs, then refuses new connections, which nginx retries on the other replica."""
    with SteadyLoad(topo.port) as load:
        for node in topo.nodes:
            assert topo.stop_replica(node.index) == 0, node.proc.tail()
            load.carried(10)
            topo.start_replica(node.index)
            wait_until(lambda node=node: served(node.metrics_port, "demo") >= 5, timeout=30)
        load.carried(10)
    assert load.failures == []


def test_the_script_starts_everything_and_stops_everything_on_sigterm(tmp_path: Path):
    """What a user runs: `python deploy/local/topology.py`, then Ctrl-C or SIGTERM."""
    lb, redis_port = free_port(), free_port()
    first, first_metrics = _port_pairs(2, avoid=(lb, redis_port))
    argv = [sys.executable, str(topology.__file__), "--port", str(lb), "--redis-port", str(redis_port)]
    argv += ["--first-port", str(first), "--first-metrics-port", str(first_metrics), "--workers", "1"]
    argv += ["--state-dir", str(tmp_path / "state"), "-f", str(REPO_ROOT / "examples" / "config.json")]
    out = tmp_path / "out.log"
    with open(out, "wb") as log:
        script = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    children: list[int] = []
    try:
        wait_until(
            lambda: "Ctrl-C stops everything." in out.read_text() or script.poll() is not None,
            timeout=90,
            message="the topology did not come up",
        )
        assert script.poll() is None, out.read_text()
        children = child_pids(script.pid)
        assert len(children) == 4, children  # redis, two replicas, nginx
        status, body = chat(lb, "demo", key="sk-onwards-demo")
        assert status == 200, body
        script.send_signal(signal.SIGTERM)
        assert script.wait(60) == 0, out.read_text()
        wait_until(lambda: not any(_alive(pid) for pid in children), timeout=10)
        assert not any(_listening(port) for port in (lb, redis_port, first, first + 1, first_metrics))
    finally:
        if script.poll() is None:
            script.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=2).close()
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
