"""Time to first byte of streamed chat completions, at a fixed concurrency (aiohttp client).

Each of ``--concurrency`` loops POSTs a streaming request, notes when the first body bytes arrive
(the first SSE event), reads the stream to its end, and starts over until ``--duration`` is up.
Prints one JSON object: streams completed, streams/s, TTFB p50/p99 in ms and errors.

    python -m tests.bench.ttfb --url http://127.0.0.1:8000/v1/chat/completions --concurrency 16 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from tests.bench.payloads import KEY, SSE_DONE, STREAM_REQUEST_BODY


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (pct in 0..100); ValueError when empty."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


async def _one(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with session.post(url, data=STREAM_REQUEST_BODY.encode(), headers=headers) as response:
        first = await response.content.readany()
        ttfb = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"status {response.status}")
        if not first:
            raise RuntimeError("empty stream")
        tail = first[-len(SSE_DONE) :]
        while True:
            chunk = await response.content.readany()
            if not chunk:
                break
            tail = (tail + chunk)[-len(SSE_DONE) :]
        if tail != SSE_DONE:
            raise RuntimeError("stream did not end with [DONE]")
    return ttfb


async def measure(url: str, concurrency: int, duration_s: float) -> dict[str, Any]:
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
    }
    ttfbs: list[float] = []
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        # One untimed stream per loop first, so connection set-up is not counted as first-byte time.
        await asyncio.gather(
            *(_one(session, url, headers) for _ in range(concurrency)), return_exceptions=True
        )
        deadline = time.perf_counter() + duration_s

        async def loop() -> None:
            while time.perf_counter() < deadline:
                try:
                    ttfbs.append(await _one(session, url, headers))
                except (aiohttp.ClientError, OSError, RuntimeError, TimeoutError) as exc:
                    kind = f"{type(exc).__name__}: {exc}"[:120]
                    errors[kind] = errors.get(kind, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "streams": len(ttfbs),
        "streams_per_s": len(ttfbs) / elapsed if elapsed > 0 else 0.0,
        "ttfb_p50_ms": percentile(ttfbs, 50) * 1000 if ttfbs else None,
        "ttfb_p99_ms": percentile(ttfbs, 99) * 1000 if ttfbs else None,
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


def run_ttfb(url: str, concurrency: int, duration_s: float) -> dict[str, Any]:
    """Run this module in its own process (so its CPU is not the runner's) and return its figures."""
    argv = [sys.executable, "-m", "tests.bench.ttfb", "--url", url]
    argv += ["--concurrency", str(concurrency), "--duration", str(duration_s)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 60, check=False, env=dict(os.environ)
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the TTFB client did not finish in time: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"the TTFB client failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (5)")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("--concurrency must be at least 1 and --duration positive")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(measure(args.url, args.concurrency, args.duration))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
