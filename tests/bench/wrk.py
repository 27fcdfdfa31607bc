"""Run wrk with post.lua and read its `--latency` report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.bench.payloads import KEY, REQUEST_BODY

LUA_SCRIPT = Path(__file__).with_name("post.lua")
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = r"([\d.]+)(us|ms|s|m|h)\b"


class WrkError(RuntimeError):
    """wrk failed, timed out or printed something this parser does not understand."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """The figures of one `wrk --latency` report; WrkError if a needed line is missing."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(rf"^\s+50%\s+{_DURATION}", output, re.M)
    p99 = re.search(rf"^\s+99%\s+{_DURATION}", output, re.M)
    total = re.search(r"^\s+(\d+) requests in ", output, re.M)
    if not (rps and p50 and p99 and total):
        raise WrkError(f"cannot read the wrk report (was --latency given?):\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


def run_wrk(
    url: str, concurrency: int, duration_s: int, threads: int = 1, timeout_s: float = 10.0
) -> WrkResult:
    """POST chat completions at ``url`` with ``concurrency`` connections for ``duration_s`` seconds.

    wrk only takes whole seconds.
    """
    binary = wrk_binary()
    if binary is None:
        raise WrkError("wrk is not installed (apt-get install -y wrk)")
    if concurrency < 1 or not isinstance(duration_s, int) or duration_s < 1:
        raise ValueError(
            f"need concurrency >= 1 and whole seconds >= 1, got {concurrency} and {duration_s!r}"
        )
    threads = max(1, min(threads, concurrency))
    argv = [
        binary,
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    env = {**os.environ, "BENCH_BODY": REQUEST_BODY, "BENCH_KEY": KEY}
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=duration_s + timeout_s + 20, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish in time: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)
