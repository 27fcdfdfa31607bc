"""Prometheus metrics of a real two-worker gateway, read the way Prometheus reads them: one scrape.

The numbers must be the sum over both workers, stay exact across a worker that is SIGKILLed and
respawned, keep the multiprocess dir from growing, honour --metrics-prefix, never turn client input
into label values, and be absent with --no-metrics.

A worker counts a request after the last byte went out, so a client can hold its answer a moment
before the counter moves: every check first waits for the expected total, then asserts it exactly.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mock_upstream import MockUpstream
from tests.support.processes import GatewayProcess, group_members, http_status, wait_until

pytestmark = pytest.mark.integration

CLIENT_KEY = "sk-metrics-client-7f3a"
UPSTREAM_KEY = "sk-metrics-upstream-91c2"
# Every route label value Onwards may produce (docs/metrics.md, "Label values").
KNOWN_ROUTES = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/models",
    "/v1/moderations",
    "/v1/audio/transcriptions",
    "/v1/audio/speech",
    "/v1/images/generations",
    "/v1/rerank",
    "/v1/other",
    "other",
}
LabelKey = tuple[str, str, str, str]  # target, route, method, status


# --- helpers ---------------------------------------------------------------------------------


def scrape(gw: GatewayProcess) -> str:
    r = httpx.get(gw.metrics_url, timeout=5)
    assert r.status_code == 200, r.text
    return r.text


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of every sample in a scrape."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def requests_by_labels(text: str, prefix: str = "onwards") -> dict[LabelKey, float]:
    out: dict[LabelKey, float] = {}
    for name, labels, value in samples(text):
        if name == f"{prefix}_requests_total":
            key = (labels["target"], labels["route"], labels["method"], labels["status"])
            out[key] = out.get(key, 0.0) + value
    return out


def requests_total(gw: GatewayProcess) -> float:
    return sum(requests_by_labels(scrape(gw)).values())


def gauge(gw: GatewayProcess, name: str) -> float | None:
    for sample_name, _labels, value in samples(scrape(gw)):
        if sample_name == name:
            return value
    return None


def wait_for_total(gw: GatewayProcess, expected: float, timeout: float = 5.0) -> None:
    """Wait until onwards_requests_total reaches `expected`, then require it to be exactly that."""
    try:
        wait_until(lambda: requests_total(gw) >= expected, timeout=timeout)
    except TimeoutError:
        pytest.fail(f"requests_total stayed at {requests_total(gw)}, expected {expected}\n{gw.describe()}")
    assert requests_total(gw) == expected


@dataclass
class Reply:
    status_code: int
    text: str


def post(gw: GatewayProcess, path: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
    """POST on a fresh connection. (http.client rather than httpx: a new httpx client builds an SSL
    context, about 0.1 s each, which would dominate a test of many fresh connections.)"""
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **headers})
        response = conn.getresponse()
        return Reply(response.status, response.read().decode(errors="replace"))
    finally:
        conn.close()


def chat(gw: GatewayProcess, model: str = "gpt", key: str | None = CLIENT_KEY, **headers: str) -> Reply:
    """One chat completion on a fresh connection."""
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return post(
        gw, "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]}, headers
    )


def access_lines(gw: GatewayProcess) -> list[dict]:
    lines = []
    for line in gw.output().splitlines():
        if '"logger":"onwards.access"' in line:
            lines.append(json.loads(line))
    return lines


def metric_files(path: Path) -> list[str]:
    return sorted(name for name in os.listdir(path) if name.endswith(".db"))


def pid_of(name: str) -> int | None:
    stem = name[: -len(".db")]
    tail = stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def write_config(path: Path, mock: MockUpstream) -> Path:
    config = {
        "targets": {
            "gpt": {"url": mock.url + "/v1", "onwards_key": UPSTREAM_KEY, "keys": [CLIENT_KEY]},
            "open": {"url": mock.url + "/v1"},
        }
    }
    path.write_text(json.dumps(config))
    return path


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("metrics-mock") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def config_path(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("metrics") / "config.json", mock)


@contextlib.contextmanager
def run_gateway(config_path: Path, **options: Any) -> Iterator[GatewayProcess]:
    process = GatewayProcess(config_path, workers=2, **options)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- {process.describe()}")
        process.close()


@pytest.fixture(scope="module")
def gw(config_path: Path) -> Iterator[GatewayProcess]:
    """The shared gateway: JSON logs so the access log names the worker pid of every request."""
    with run_gateway(config_path, extra_args=["--log-format", "json", "--watch=false"]) as process:
        yield process


# --- the tests -------------------------------------------------------------------------------


def test_requests_total_is_summed_over_both_workers(gw: GatewayProcess):
    assert len(gw.worker_pids()) == 2, gw.describe()
    before = requests_by_labels(scrape(gw))
    run = uuid.uuid4().hex[:8]

    # (how many, function sending one request, the label key it must be counted under)
    def good(i: int) -> Reply:
        return chat(gw, **{"x-request-id": f"{run}-{i}"})

    def embed(i: int) -> Reply:
        return post(gw, "/v1/embeddings", {"model": "open", "input": "x"}, {"x-request-id": f"{run}-{i}"})

    def wrong_key(i: int) -> Reply:
        return chat(gw, key="sk-wrong", **{"x-request-id": f"{run}-{i}"})

    def unknown_model(i: int) -> Reply:
        return chat(gw, model="no-such-model", **{"x-request-id": f"{run}-{i}"})

    def upstream_503(i: int) -> Reply:
        headers = {"x-request-id": f"{run}-{i}", "x-mock-status": "503"}
        return post(gw, "/v1/completions", {"model": "open", "prompt": "x"}, headers)

    plan = [
        (30, good, ("gpt", "/v1/chat/completions", "POST", "200"), 200),
        (10, embed, ("open", "/v1/embeddings", "POST", "200"), 200),
        (8, wrong_key, ("gpt", "/v1/chat/completions", "POST", "401"), 401),
        (7, unknown_model, ("unknown", "/v1/chat/completions", "POST", "404"), 404),
        (5, upstream_503, ("open", "/v1/completions", "POST", "503"), 503),
    ]
    jobs = [(send, status) for count, send, _key, status in plan for _ in range(count)]
    n = len(jobs)
    assert n == 60

    def run_job(i: int) -> tuple[int, int, str]:
        send, expected_status = jobs[i]
        response = send(i)
        return expected_status, response.status_code, response.text

    # Six clients at once, each request on its own connection, so both workers accept some.
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(run_job, range(n)))
    for i, (expected_status, status, text) in enumerate(outcomes):
        assert status == expected_status, (i, text)

    # The access log says which worker served each request. Which worker accepts a connection is
    # the kernel's choice: on a busy machine one worker can take all 60, so more good requests go
    # out (in bounded rounds) until both have served some, and are counted like the rest.
    extra = 0
    served_by: Counter[int] = Counter()
    for _round in range(30):
        seen = n + extra
        wait_until(lambda seen=seen: len(mine_lines(gw, run)) == seen, timeout=10, interval=0.05)
        served_by = Counter(line["pid"] for line in mine_lines(gw, run))
        if set(served_by) == set(gw.worker_pids()):
            break
        with ThreadPoolExecutor(6) as pool:
            more = list(pool.map(good, range(n + extra, n + extra + 12)))
        assert [r.status_code for r in more] == [200] * 12
        extra += 12
    assert set(served_by) == set(gw.worker_pids()), (served_by, gw.worker_pids())

    wait_for_total(gw, sum(before.values()) + n + extra)
    after = requests_by_labels(scrape(gw))
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    expected = {key: float(count) for count, _send, key, _status in plan}
    expected[plan[0][2]] += extra
    assert delta == expected


def mine_lines(gw: GatewayProcess, run: str) -> list[dict]:
    return [line for line in access_lines(gw) if line["request_id"].startswith(run + "-")]


def test_requests_in_flight_rises_during_slow_requests_and_returns_to_zero(gw: GatewayProcess):
    name = "onwards_requests_in_flight"
    assert gauge(gw, name) == 0.0
    slow = 4
    results: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        # Long enough that a busy machine still gets all four in flight before the first ends.
        r = chat(gw, **{"x-mock-delay": "8"})
        with lock:
            results.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(slow)]
    for t in threads:
        t.start()
    try:
        # Summed over both workers: all four, whichever worker took each.
        wait_until(lambda: gauge(gw, name) == slow, timeout=7.5, interval=0.05)
    finally:
        for t in threads:
            t.join(10)
    assert results == [200] * slow
    wait_until(lambda: gauge(gw, name) == 0.0, timeout=3)


def test_labels_stay_bounded_whatever_the_client_sends(gw: GatewayProcess):
    before_series = set(requests_by_labels(scrape(gw)))
    secrets_sent: list[str] = []
    for i in range(50):
        segment = "p" + secrets.token_hex(6)
        key = "sk-" + secrets.token_hex(10)
        model = "m" + secrets.token_hex(6)
        secrets_sent += [segment, key, model]
        # Some ask for configured models, so random paths also reach the upstream (open) or the
        # key check (gpt) and are counted under a real target.
        chosen = ("open", "gpt", model)[i % 3]
        r = post(
            gw,
            f"/v1/{segment}/{secrets.token_hex(3)}?q={segment}",
            {"model": chosen, "input": "x"},
            {"authorization": f"Bearer {key}"},
        )
        assert r.status_code == {"open": 200, "gpt": 401}.get(chosen, 404), r.text
    text = scrape(gw)
    for value in secrets_sent:
        assert value not in text
    routes = {labels["route"] for _n, labels, _v in samples(text) if "route" in labels}
    targets = {labels["target"] for _n, labels, _v in samples(text) if "target" in labels}
    providers = {labels["provider"] for _n, labels, _v in samples(text) if "provider" in labels}
    assert routes <= KNOWN_ROUTES
    assert targets <= {"gpt", "open", "unknown"}
    assert providers <= {"gpt/0", "open/0"}
    new_series = set(requests_by_labels(text)) - before_series
    # 50 random requests may add at most the three series they can fall into.
    assert new_series <= {
        ("open", "/v1/other", "POST", "200"),
        ("gpt", "/v1/other", "POST", "401"),
        ("unknown", "/v1/other", "POST", "404"),
    }


def test_killed_workers_keep_counters_and_the_dir_bounded(config_path: Path, tmp_path: Path):
    metrics_dir = tmp_path / "metrics"
    with run_gateway(
        config_path,
        extra_args=["--log-format", "json", "--watch=false"],
        env={"ONWARDS_METRICS_DIR": str(metrics_dir)},
    ) as gw:
        originals = gw.worker_pids()
        assert len(originals) == 2, gw.describe()
        sent = 0

        def traffic() -> None:
            """Requests until every live worker has served some, so each has all its files."""
            nonlocal sent
            tag = uuid.uuid4().hex[:8]
            deadline = time.monotonic() + 15
            while True:
                with ThreadPoolExecutor(4) as pool:
                    ids = [f"{tag}-{sent + i}" for i in range(8)]
                    codes = list(pool.map(lambda rid: chat(gw, **{"x-request-id": rid}).status_code, ids))
                assert codes == [200] * len(ids), gw.describe()
                sent += len(ids)
                wait_for_total(gw, sent)
                served = {line["pid"] for line in access_lines(gw) if line["request_id"].startswith(tag)}
                if served >= set(gw.worker_pids()):
                    return
                assert time.monotonic() < deadline, (
                    f"workers {gw.worker_pids()} not all serving\n{gw.describe()}"
                )
                time.sleep(0.1)

        def check_dir() -> int:
            scrape(gw)  # a scrape folds whatever died before it answers
            files = metric_files(metrics_dir)
            live = set(gw.worker_pids())
            stale = [f for f in files if pid_of(f) is not None and pid_of(f) not in live]
            assert not stale, (files, live)
            return len(files)

        traffic()
        file_counts = [check_dir()]
        # Granian treats a second crash of the same worker slot within 5.5 s of its respawn as a
        # crash loop and exits; the two originals sit in different slots, so no pause is needed.
        for victim in originals:
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda v=victim: v not in gw.worker_pids(), timeout=5)
            # Folded into the archive, not lost: still exactly `sent`, before any new traffic.
            assert requests_total(gw) == sent
            try:
                wait_until(lambda: len(gw.worker_pids()) == 2, timeout=15)
            except TimeoutError:
                pytest.fail(f"no respawned worker after killing {victim}\n{gw.describe()}")
            traffic()
            assert requests_total(gw) == sent
            file_counts.append(check_dir())
        assert gw.is_running(), gw.describe()
        assert not set(originals) & set(gw.worker_pids())
        # Two live workers' files, plus one archive per summed type once someone died: the same
        # after the second death as after the first.
        assert file_counts[1] == file_counts[2] == file_counts[0] + 2, file_counts
        assert {"counter_archive.db", "histogram_archive.db"} <= set(metric_files(metrics_dir))


@dataclass
class Variants:
    prefixed: GatewayProcess  # --metrics-prefix myprefix
    unmetered: GatewayProcess  # --no-metrics, with ONWARDS_METRICS_DIR set
    unmetered_dir: Path


@pytest.fixture(scope="module")
def variants(config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Variants]:
    """Two more gateways, launched together so their start-ups overlap."""
    unmetered_dir = tmp_path_factory.mktemp("unmetered") / "metrics"
    prefixed = GatewayProcess(config_path, extra_args=["--metrics-prefix", "myprefix", "--watch=false"])
    unmetered = GatewayProcess(
        config_path,
        extra_args=["--no-metrics", "--watch=false"],
        env={"ONWARDS_METRICS_DIR": str(unmetered_dir)},
    )
    try:
        prefixed.launch()
        unmetered.launch()
        for process in (prefixed, unmetered):
            process.wait_ready(process.ready, process.startup_timeout)
        yield Variants(prefixed, unmetered, unmetered_dir)
    finally:
        for process in (prefixed, unmetered):
            process.stop()
            print(f"--- {process.describe()}")
            process.close()


def test_metrics_prefix_renames_every_metric(variants: Variants):
    gw = variants.prefixed
    assert chat(gw).status_code == 200
    wait_until(lambda: "myprefix_requests_total{" in scrape(gw), timeout=5)
    text = scrape(gw)
    assert "onwards_" not in text
    families = {family.name for family in text_string_to_metric_families(text)}
    assert all(name.startswith("myprefix_") for name in families), families
    for expected in (
        "requests",
        "request_duration_seconds",
        "requests_in_flight",
        "upstream_requests",
        "upstream_ttfb_seconds",
        "auth_failures",
        "limit_rejections",
        "config_active",
        "limiter_circuit_open",
    ):
        assert f"myprefix_{expected}" in families, (expected, families)
    key = ("gpt", "/v1/chat/completions", "POST", "200")
    assert requests_by_labels(text, prefix="myprefix") == {key: 1.0}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_no_metrics_means_no_listener_and_no_files(variants: Variants):
    gw = variants.unmetered
    assert chat(gw).status_code == 200
    assert http_status(gw.host, gw.metrics_port, "/metrics") is None
    exporters = [pid for pid in group_members(gw.pid) if "onwards.metrics_exporter" in _cmdline(pid)]
    assert not exporters
    # No multiprocess dir is prepared, so the workers write no metric files at all.
    assert not variants.unmetered_dir.exists()
    # ...while the metered gateway does run an exporter: the check above can see one.
    assert [
        pid for pid in group_members(variants.prefixed.pid) if "onwards.metrics_exporter" in _cmdline(pid)
    ]
