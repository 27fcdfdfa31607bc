"""Fast checks of the benchmark's own arithmetic: wrk parsing, medians, ratios, targets, sockets, profiles."""

from __future__ import annotations

import os
import socket

import pytest

from tests.bench import report
from tests.bench.procinfo import ConnectionTracker
from tests.bench.profile import hot_spots
from tests.bench.ttfb import percentile
from tests.bench.wrk import WrkError, parse_wrk

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:40000/v1/chat/completions
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.03ms    3.21ms  80.11ms   91.00%
    Req/Sec     5.32k   301.22     5.90k    70.00%
  Latency Distribution
     50%  850.00us
     75%   13.20ms
     90%   15.01ms
     99%    1.20s
  26511 requests in 5.00s, 20.12MB read
  Socket errors: connect 0, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 17
Requests/sec:   5302.20
Transfer/sec:      4.02MB
"""


def test_parse_wrk_reads_rate_percentiles_in_any_unit_and_errors() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests_per_s == pytest.approx(5302.20)
    assert result.p50_ms == pytest.approx(0.85)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.requests == 26511
    assert result.non_2xx == 17
    assert result.socket_errors == 7


def test_parse_wrk_without_errors_lines_counts_zero() -> None:
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "Socket errors" not in line and "Non-2xx" not in line
    )
    result = parse_wrk(clean)
    assert (result.non_2xx, result.socket_errors) == (0, 0)


def test_parse_wrk_without_latency_distribution_fails_loudly() -> None:
    lines = WRK_OUTPUT.splitlines()
    without = "\n".join(line for line in lines if not line.strip()[:3].rstrip("%").isdigit())
    assert "99%" not in without
    with pytest.raises(WrkError, match="--latency"):
        parse_wrk(without)


def _run(variant: str, workers: int | None, concurrency: int, rps: float, p50: float, p99: float) -> dict:
    return {
        "variant": variant,
        "workers": workers,
        "concurrency": concurrency,
        "requests_per_s": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": 0,
        "socket_errors": 0,
    }


def _rows() -> list[dict]:
    runs = [
        # Three repeats of the bare proxy: the median, not the mean, is kept.
        _run("b", 2, 64, 1000, 10, 30),
        _run("b", 2, 64, 5000, 12, 31),
        _run("b", 2, 64, 4000, 11, 90),
        _run("c", 2, 64, 3000, 15, 40),
        _run("d", 2, 64, 3400, 16, 41),
        _run("e", 2, 64, 2000, 18, 45),
        _run("b", 1, 64, 2000, 20, 50),
        _run("bx", 1, 64, 100, 600, 900),
        _run("bg", 2, 64, 5000, 9, 25),
        _run("a", None, 1, 30000, 0.05, 0.2),
        _run("d", 2, 1, 1500, 0.6, 1.9),
        _run("b", 2, 1, 2000, 0.45, 1.0),
    ]
    return report.summarize(runs)


def test_summarize_takes_medians_per_configuration() -> None:
    bare = report.find(_rows(), "b", 2, 64)
    assert bare is not None
    assert (bare["requests_per_s"], bare["p50_ms"], bare["p99_ms"], bare["samples"]) == (4000, 11, 31, 3)


def test_ratios_and_added_latency() -> None:
    rows = _rows()
    ratio = report.ratios(rows)
    assert ratio["d_over_b"] == pytest.approx(0.85)
    assert ratio["c_over_b"] == pytest.approx(0.75)
    assert ratio["d_over_c"] == pytest.approx(3400 / 3000)
    assert ratio["e_over_b"] == pytest.approx(0.5)
    assert ratio["httpx_over_aiohttp_bare_w1"] == pytest.approx(0.05)
    assert ratio["d_over_bg"] == pytest.approx(0.68)
    assert ratio["bg_over_b"] == pytest.approx(1.25)
    throughput = report.targets(ratio, added := report.added_latency(rows), {}, {})[0]
    assert throughput["met"] is True
    assert "(d)/(bg) = 0.68" in throughput["note"]
    added = report.added_latency(rows)
    assert added["d/w2"]["p50_ms"] == pytest.approx(0.55)
    assert added["d/w2"]["p99_ms"] == pytest.approx(1.7)


def test_ratio_of_a_configuration_that_did_not_run_is_none() -> None:
    rows = [r for r in _rows() if r["variant"] != "d"]
    assert report.ratios(rows)["d_over_b"] is None


def test_targets_met_not_met_and_unmeasured() -> None:
    rows = _rows()
    connections = {
        "d/w2": {
            "workers": 2,
            "during": {"established": 64, "time_wait": 0, "per_worker": [40, 24], "total": 64},
            "after": {"established": 64, "time_wait": 0, "per_worker": [], "total": 64},
        },
        # A churning pool: TIME-WAIT counts against it.
        "c/w1": {
            "workers": 1,
            "during": {"established": 64, "time_wait": 300, "per_worker": [64], "total": 364},
            "after": None,
        },
    }
    ttfb = {"direct": {"ttfb_p50_ms": 1.0}, "gateway": {"ttfb_p50_ms": 1.8, "label": "gateway (d)"}}
    got = {
        t["name"]: t
        for t in report.targets(report.ratios(rows), report.added_latency(rows), connections, ttfb)
    }
    assert got["throughput with Redis limits"]["met"] is True
    assert got["added latency p50 at c1"]["met"] is True
    assert got["added latency p99 at c1"]["met"] is True
    assert got["upstream connections"]["met"] is False
    assert got["upstream connections"]["value"] == 364
    assert got["streaming time to first byte"]["value"] == pytest.approx(0.8)
    assert got["streaming time to first byte"]["met"] is True

    del connections["c/w1"]
    ttfb["gateway"]["ttfb_p50_ms"] = 2.5
    got = {t["name"]: t for t in report.targets(report.ratios(rows), {}, connections, ttfb)}
    assert got["upstream connections"]["met"] is True
    assert got["upstream connections"]["value"] == 40
    assert got["streaming time to first byte"]["met"] is False
    assert got["added latency p50 at c1"]["met"] is None


def test_connection_tracker_counts_open_opened_and_closed_connections_of_one_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        pairs = []

        def connect() -> tuple[socket.socket, socket.socket]:
            client = socket.create_connection(("127.0.0.1", port))
            pairs.append((client, server.accept()[0]))
            return pairs[-1]

        try:
            old_client, old_server = connect()
            tracker = ConnectionTracker(port, [os.getpid()])
            # The same, counting opened connections from the upstream's accept counter.
            counted = ConnectionTracker(port, [os.getpid()], accepts=lambda: len(pairs) * 10)
            assert len(tracker.base.open) == 1
            connect()
            connect()
            tracker.sample()
            # The client closes first, so its side goes to TIME-WAIT once the server closes too.
            old_client.close()
            old_server.close()
            during = tracker.during()
            now = tracker.now()
            counted_now = counted.now()
        finally:
            for client, accepted in pairs:
                client.close()
                accepted.close()
    # Only client ends count as open (the accepted ends have the port as their local port).
    assert (during.established, during.opened, during.per_worker) == (3, 2, (3,))
    assert (now.established, now.time_wait, now.opened) == (2, 1, 2)
    assert now.total == 3
    assert (counted_now.established, counted_now.time_wait, counted_now.opened) == (2, 1, 20)


def test_hot_spots_charge_library_time_to_the_deepest_onwards_frame() -> None:
    # Every worker's stack starts under the CLI's entry frames (Granian forks inside `serve`).
    root = (
        'process 1:"python";<module> (onwards/__main__.py:1);main (onwards/cli.py:9);serve (onwards/cli.py:9)'
    )
    collapsed = "\n".join(
        [
            f"{root};run (asyncio/runners.py:1);__call__ (onwards/proxy/handler.py:70);"
            "admit (onwards/limits/redis.py:200);execute (redis/asyncio/client.py:600) 60",
            f"{root};run (asyncio/runners.py:1);__call__ (onwards/proxy/handler.py:70) 10",
            f"{root};run (asyncio/runners.py:1);select (uvloop/loop.py:1) 30",
        ]
    )
    spots = hot_spots(collapsed)
    assert spots["samples"] == 100
    assert spots["onwards_percent"] == pytest.approx(70)
    own = {row["function"]: row["percent"] for row in spots["own"]}
    assert own["admit (onwards/limits/redis.py)"] == pytest.approx(60)
    assert own["__call__ (onwards/proxy/handler.py)"] == pytest.approx(10)
    inclusive = {row["function"]: row["percent"] for row in spots["inclusive"]}
    assert inclusive["__call__ (onwards/proxy/handler.py)"] == pytest.approx(70)
    assert "serve (onwards/cli.py)" not in inclusive
    areas = {row["area"]: row["percent"] for row in spots["leaf_areas"]}
    assert areas == {"redis client": 60, "asyncio / uvloop": 30, "onwards": 10}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_issue_10_targets_access_log_redis_cpu_and_no_limits() -> None:
    rows = [
        *(_run("b", 2, 64, 4000, 11, 31) for _ in range(3)),
        *(_run("c", 2, 64, 4100, 11, 31) for _ in range(3)),
        *(_run("d", 2, 64, 3500, 11, 31) for _ in range(3)),
        *(_run("dn", 2, 64, 3600, 11, 31) for _ in range(3)),
    ]
    ratio = report.ratios(report.summarize(rows))
    assert ratio["d_over_dn"] == pytest.approx(3500 / 3600)
    cpu = {
        "requests": 1000,
        "cpu_us_per_request": 30.0,
        "script_us_per_request": 20.0,
        "requests_per_core_s": 33333,
    }
    by_name = {t["name"]: t for t in report.targets(ratio, {}, {}, {}, cpu)}
    assert by_name["throughput without limits"]["met"] is True
    assert by_name["access log on vs off"]["met"] is True  # 0.972 >= 0.95
    assert by_name["Redis CPU per admitted request"]["met"] is False
    assert "33,333 requests/s" in by_name["Redis CPU per admitted request"]["note"]
    unmeasured = {t["name"]: t for t in report.targets(ratio, {}, {}, {}, None)}
    assert unmeasured["Redis CPU per admitted request"]["met"] is None
