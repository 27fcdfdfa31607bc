"""The benchmark's quick mode runs end to end and writes every figure the issue asks for.

It never asserts speed: a shared two-core machine cannot promise any. It does assert that every
configuration answered without errors, since figures of failing requests measure nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.nginx import nginx_binary
from tests.bench.report import RATIO_KEYS
from tests.bench.wrk import wrk_binary
from tests.support.processes import REPO_ROOT

pytestmark = [
    pytest.mark.integration,
    # Out of the default run (it loads both cores for minutes); CI runs it as a step of its own.
    pytest.mark.bench,
    pytest.mark.skipif(wrk_binary() is None, reason="wrk is not installed (apt-get install -y wrk)"),
]


@pytest.mark.timeout(400)
def test_quick_benchmark_reports_ratios_and_targets(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--quick", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    files = list(tmp_path.glob("bench-*.json"))
    assert len(files) == 1, files
    result = json.loads(files[0].read_text())

    for key in RATIO_KEYS:
        assert key in result["ratios"], key
    # (d) needs Redis; without it the run says so and its ratios are null.
    measured = {"c_over_b", "e_over_b", "bg_over_b"}
    if result["meta"]["redis"]:
        measured |= {"d_over_b", "d_over_c", "d_over_bg"}
    for key in measured:
        assert result["ratios"][key] > 0, (key, result["ratios"])

    variants = {(row["variant"], row["concurrency"]) for row in result["summary"]}
    for concurrency in (1, 64):
        for variant in ("a", "b", "c", "e"):
            assert (variant, concurrency) in variants
    for row in result["summary"]:
        assert row["requests_per_s"] > 0, row
        assert row["non_2xx"] == 0, row

    assert {t["name"] for t in result["targets"]} == {
        "throughput with Redis limits",
        "added latency p50 at c1",
        "added latency p99 at c1",
        "upstream connections",
        "streaming time to first byte",
        "throughput without limits",
        "access log on vs off",
        "Redis CPU per admitted request",
        "token limits on key and target",
    }
    if result["meta"]["redis"]:
        # Redis's own cost per admitted request was read around the (d) runs.
        assert result["redis_cpu"]["requests"] > 0
        assert result["redis_cpu"]["cpu_us_per_request"] > 0
    # Pooling: every proxy keeps open upstream connections during the c64 run.
    for name, conns in result["connections"].items():
        assert conns["during"]["established"] > 0, (name, conns)
    for name, rss in result["rss_mb"].items():
        assert len(rss) == 2 and all(mb > 10 for mb in rss), (name, rss)
    assert result["ttfb"]["gateway"]["streams_per_s"] > 0

    expected_upstream = "nginx" if nginx_binary() else "Granian RSGI fallback"
    assert result["meta"]["upstream"].startswith(expected_upstream)
    assert "| target | goal | value | result |" in done.stdout
    assert "d_over_b" in done.stdout
