"""The exporter's reaper: dead workers' files are folded so the dir stays bounded and totals hold.

Run this file directly (python tests/unit/test_metrics_reaper.py) for the scrape-time
measurement quoted in docs/metrics.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

import onwards.metrics_exporter as mx
from onwards.metrics_exporter import Reaper, is_multiprocess_file, pid_alive

HELP = "help"
TARGETS = [f"model-{i}" for i in range(20)]
ROUTES = ["/v1/chat/completions", "/v1/embeddings"]
STATUSES = ["200", "400", "429", "500", "502"]
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0",
           "60.0", "120.0", "300.0", "600.0", "+Inf"]  # fmt: skip


def dead_pids(n: int) -> list[int]:
    """Pids no process can have: above the kernel's pid_max."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    return [pid_max + 1 + i for i in range(n)]


def write(path: str, name: str, rows: dict[str, float], ts: float = 0.0) -> None:
    d = MmapedDict(os.path.join(path, name))
    for key, v in rows.items():
        d.write_value(key, v, ts)
    d.close()


def write_worker(path: str, pid: int, seed: int, wide: bool = False) -> None:
    """The files one worker leaves: counters, a histogram and three kinds of gauges.

    Values are whole numbers (or sums of exact binary fractions) so sums do not depend on order.
    """
    targets = TARGETS if wide else TARGETS[:3]
    counters, hist = {}, {}
    for t in targets:
        for r in ROUTES:
            for st in STATUSES:
                labels = ["target", "route", "method", "status"]
                key = mmap_key("onwards_requests", "onwards_requests_total", labels, [t, r, "POST", st], HELP)
                counters[key] = float(seed + len(st) + len(t))
            for b in BUCKETS:
                key = mmap_key("onwards_request_duration_seconds", "onwards_request_duration_seconds_bucket",
                               ["target", "route", "le"], [t, r, b], HELP)  # fmt: skip
                hist[key] = float(seed % 3)
            key = mmap_key("onwards_request_duration_seconds", "onwards_request_duration_seconds_sum",
                           ["target", "route"], [t, r], HELP)  # fmt: skip
            hist[key] = seed * 0.5
    write(path, f"counter_{pid}.db", counters)
    write(path, f"histogram_{pid}.db", hist)
    in_flight = mmap_key("onwards_requests_in_flight", "onwards_requests_in_flight", [], [], HELP)
    write(path, f"gauge_livesum_{pid}.db", {in_flight: 1.0})
    circuit = mmap_key("onwards_limiter_circuit_open", "onwards_limiter_circuit_open", [], [], HELP)
    write(path, f"gauge_livemax_{pid}.db", {circuit: 1.0})
    peak = mmap_key("peak_queue", "peak_queue", [], [], HELP)  # a non-live gauge: max over every worker ever
    write(path, f"gauge_max_{pid}.db", {peak: float(seed)})
    per_pid = mmap_key("last_seen", "last_seen", [], [], HELP)  # mode "all": one series per pid
    write(path, f"gauge_all_{pid}.db", {per_pid: 1.0})


def collect(path: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for metric in MultiProcessCollector(None, path=path).collect():
        for s in metric.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def only(samples: dict, prefix: str) -> dict:
    return {k: v for k, v in samples.items() if k[0].startswith(prefix)}


LIVE = [os.getpid(), os.getppid()]


@pytest.fixture
def workers(tmp_path):
    for i, pid in enumerate(LIVE):
        write_worker(str(tmp_path), pid, seed=100 + i)
    for i, pid in enumerate(dead_pids(50)):
        write_worker(str(tmp_path), pid, seed=i)
    return str(tmp_path)


def live_files() -> set[str]:
    kinds = ["counter", "histogram", "gauge_livesum", "gauge_livemax", "gauge_max", "gauge_all"]
    return {f"{k}_{pid}.db" for k in kinds for pid in LIVE}


ARCHIVES = {"counter_archive.db", "histogram_archive.db", "gauge_max_archive.db"}


def test_fifty_dead_workers_fold_into_one_archive_per_type(workers):
    before = collect(workers)
    assert len(os.listdir(workers)) == 52 * 6

    result = Reaper(workers).reap()

    assert set(result.dead_pids) == set(dead_pids(50))
    assert set(os.listdir(workers)) == live_files() | ARCHIVES
    after = collect(workers)
    # Totals never go backwards: counters and histograms are exactly what they were.
    assert only(after, "onwards_requests_total") == only(before, "onwards_requests_total")
    assert only(after, "onwards_request_duration") == only(before, "onwards_request_duration")
    assert before[("onwards_requests_in_flight", ())] == 52
    assert after[("onwards_requests_in_flight", ())] == 2  # only live workers are in flight
    assert after[("peak_queue", ())] == before[("peak_queue", ())] == 101  # max kept across deaths
    last_seen_pids = {dict(labels)["pid"] for name, labels in after if name == "last_seen"}
    assert last_seen_pids == {str(p) for p in LIVE}


def test_later_deaths_add_to_the_archive_and_stay_bounded(workers):
    Reaper(workers).reap()
    for i, pid in enumerate(dead_pids(100)[50:]):
        write_worker(workers, pid, seed=1000 + i)
    before = collect(workers)

    Reaper(workers).reap()

    assert set(os.listdir(workers)) == live_files() | ARCHIVES
    after = collect(workers)
    assert only(after, "onwards_requests_total") == only(before, "onwards_requests_total")
    assert only(after, "onwards_request_duration") == only(before, "onwards_request_duration")
    assert after[("peak_queue", ())] == 1049


def test_nothing_dead_changes_nothing(tmp_path):
    write_worker(str(tmp_path), os.getpid(), seed=1)
    files = sorted(os.listdir(tmp_path))
    before = collect(str(tmp_path))
    assert Reaper(str(tmp_path)).reap().dead_pids == ()
    assert sorted(os.listdir(tmp_path)) == files
    assert collect(str(tmp_path)) == before


class Killed(Exception):
    """Stands for the exporter being killed at this point."""


def test_killed_before_the_journal_loses_nothing(workers, monkeypatch):
    before = collect(workers)

    def killed(*args):
        raise Killed

    monkeypatch.setattr(Reaper, "_write_journal", killed)
    with pytest.raises(Killed):
        Reaper(workers).reap()
    monkeypatch.undo()
    assert any(n.endswith(".tmp") for n in os.listdir(workers))  # half-written archives left behind

    Reaper(workers).reap()
    assert set(os.listdir(workers)) == live_files() | ARCHIVES
    after = collect(workers)
    assert only(after, "onwards_requests_total") == only(before, "onwards_requests_total")
    assert only(after, "onwards_request_duration") == only(before, "onwards_request_duration")


@pytest.mark.parametrize("replaced_before_kill", [0, 1, 3])
def test_killed_mid_commit_never_counts_twice(workers, monkeypatch, replaced_before_kill):
    before = collect(workers)
    real_replace = os.replace
    calls = {"n": 0}

    def replace_then_die(src, dst):
        if src.endswith(mx.JOURNAL + ".tmp"):
            return real_replace(src, dst)  # the journal itself is written
        if calls["n"] == replaced_before_kill:
            raise Killed
        calls["n"] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(mx.os, "replace", replace_then_die)
    if replaced_before_kill < 3:
        with pytest.raises(Killed):
            Reaper(workers).reap()
    else:  # every archive swapped in, killed halfway through deleting the absorbed files

        def commit_then_die(self, replace, delete):
            for tmp, archive in replace:
                real_replace(tmp, archive)
            for path in delete[: len(delete) // 2]:
                os.remove(path)
            raise Killed

        monkeypatch.setattr(Reaper, "_commit", commit_then_die)
        with pytest.raises(Killed):
            Reaper(workers).reap()
    monkeypatch.undo()
    assert mx.JOURNAL in os.listdir(workers)

    Reaper(workers).recover()
    assert set(os.listdir(workers)) == live_files() | ARCHIVES
    after = collect(workers)
    assert only(after, "onwards_requests_total") == only(before, "onwards_requests_total")
    assert only(after, "onwards_request_duration") == only(before, "onwards_request_duration")
    Reaper(workers).reap()
    assert set(os.listdir(workers)) == live_files() | ARCHIVES


def test_pid_alive_sees_zombies_as_dead():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pids(1)[0])
    assert not pid_alive(0)
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(child.pid)  # exited but not waited for: a zombie still answers kill(0)
    os.kill(child.pid, 0)
    child.wait()


def test_file_names_the_dir_owns():
    for name in ["counter_12.db", "gauge_livesum_3.db", "histogram_archive.db", "counter_archive.db.tmp",
                 mx.JOURNAL, "summary_7.db"]:  # fmt: skip
        assert is_multiprocess_file(name), name
    for name in ["app.db", "counter_x.db", "notes.txt", "counter_12.db.tmp", "gauge_12.db"]:
        assert not is_multiprocess_file(name), name


# --- measurement (not a test) --------------------------------------------------------------


def _scrape_seconds(path: str, reap: bool) -> float:
    """CPU seconds of one scrape as the exporter does it (process time: the host may be busy)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    start = time.process_time()
    if reap:
        Reaper(path).reap()
    generate_latest(registry)
    return time.process_time() - start


def _fresh_copy(src: str) -> str:
    dst = tempfile.mkdtemp()
    shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def measure(live: int = 8, dead: int = 50, rounds: int = 21) -> None:
    """Scrape cost with `live` workers, then with `dead` dead workers' files added."""
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(live)]
    try:
        base = tempfile.mkdtemp()
        for i, p in enumerate(sleepers):
            write_worker(base, p.pid, seed=i, wide=True)
        with_dead = _fresh_copy(base)
        for i, pid in enumerate(dead_pids(dead)):
            write_worker(with_dead, pid, seed=i, wide=True)
        folded = _fresh_copy(with_dead)
        Reaper(folded).reap()

        def folding_scrape() -> float:
            fresh = _fresh_copy(with_dead)
            try:
                return _scrape_seconds(fresh, reap=True)
            finally:
                shutil.rmtree(fresh)

        cases = {
            "baseline: live workers only": lambda: _scrape_seconds(base, reap=True),
            f"+{dead} dead workers, no reaper": lambda: _scrape_seconds(with_dead, reap=False),
            f"+{dead} dead workers, the scrape folds them": folding_scrape,
            f"+{dead} dead workers, folded before the scrape": lambda: _scrape_seconds(folded, reap=True),
        }
        # Interleaved rounds, so a neighbour's load hits every case alike.
        runs: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, case in cases.items():
                runs[name].append(case() * 1000)
        base_runs = runs["baseline: live workers only"]
        print(f"{live} live workers ({len(os.listdir(base))} files, {len(collect(base))} samples), "
              f"{rounds} rounds; CPU ms median, median of per-round ratios to the baseline")  # fmt: skip
        for name, values in runs.items():
            ratio = statistics.median(v / b for v, b in zip(values, base_runs, strict=True))
            print(f"  {name:48} {statistics.median(values):7.1f} ms  {ratio:5.2f}x")
        for d in (base, with_dead, folded):
            shutil.rmtree(d)
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


if __name__ == "__main__":
    measure(*(int(a) for a in sys.argv[1:]))
