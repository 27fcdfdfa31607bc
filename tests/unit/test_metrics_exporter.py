"""The exporter process: serves the summed metrics, folds dead workers, stops, follows its parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from onwards.metrics import start_exporter, stop_exporter
from onwards.metrics_exporter import pid_alive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_requests(path: str, pid: int, count: float) -> None:
    d = MmapedDict(os.path.join(path, f"counter_{pid}.db"))
    key = mmap_key("onwards_requests", "onwards_requests_total", ["target"], ["gpt"], "Requests answered.")
    d.write_value(key, count, 0.0)
    d.close()
    g = MmapedDict(os.path.join(path, f"gauge_livesum_{pid}.db"))
    key = mmap_key("onwards_requests_in_flight", "onwards_requests_in_flight", [], [], "In flight.")
    g.write_value(key, 1.0, 0.0)
    g.close()


def dead_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 7


@pytest.fixture
def exporter(tmp_path):
    port = free_port()
    started = []

    def start():
        proc = start_exporter(port, "127.0.0.1", str(tmp_path))
        started.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        stop_exporter(proc)


def test_serves_the_sum_of_live_and_dead_workers_then_stops(exporter, tmp_path):
    write_requests(str(tmp_path), os.getpid(), 2)
    proc, url = exporter()
    write_requests(str(tmp_path), dead_pid(), 3)  # a worker that died after the exporter started

    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'onwards_requests_total{target="gpt"} 5.0' in r.text
    assert "onwards_requests_in_flight 1.0" in r.text  # the dead worker is no longer in flight
    # That scrape folded the dead worker's counter into the archive.
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["counter_archive.db", f"counter_{os.getpid()}.db", f"gauge_livesum_{os.getpid()}.db"]
    )
    again = httpx.get(url + "/metrics", timeout=10)
    assert 'onwards_requests_total{target="gpt"} 5.0' in again.text

    om = httpx.get(url + "/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=10)
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    assert httpx.get(url + "/nope", timeout=10).status_code == 404

    assert stop_exporter(proc) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/metrics", timeout=2)


def test_folds_dead_workers_between_scrapes(exporter, tmp_path):
    _proc, url = exporter()
    write_requests(str(tmp_path), dead_pid(), 4)
    deadline = time.monotonic() + 10
    while "counter_archive.db" not in os.listdir(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(os.listdir(tmp_path)) == ["counter_archive.db"]
    assert 'onwards_requests_total{target="gpt"} 4.0' in httpx.get(url + "/metrics", timeout=10).text


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
            start_exporter(port, "127.0.0.1", str(tmp_path))


@pytest.mark.parametrize("port", [0, 70000, "9090"])
def test_bad_port_is_refused(tmp_path, port):
    with pytest.raises(ValueError, match="port"):
        start_exporter(port, "127.0.0.1", str(tmp_path))


def test_missing_dir_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        start_exporter(free_port(), "127.0.0.1", str(tmp_path / "missing"))


PARENT = textwrap.dedent(
    """
    import sys, time
    from onwards.metrics import start_exporter
    proc = start_exporter(int(sys.argv[1]), "127.0.0.1", sys.argv[2])
    print(proc.pid, flush=True)
    time.sleep(120)
    """
)


def test_exits_when_its_parent_dies(tmp_path):
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(port), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    exporter_pid = 0
    try:
        exporter_pid = int(parent.stdout.readline())
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
        parent.send_signal(signal.SIGKILL)  # no chance to stop its child
        parent.wait()
        deadline = time.monotonic() + 10
        while pid_alive(exporter_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(exporter_pid)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        parent.kill()
        parent.wait()
        if pid_alive(exporter_pid):
            os.kill(exporter_pid, signal.SIGKILL)
