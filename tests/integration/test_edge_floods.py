"""Slow and idle connection floods of bounded size on loopback: a normal client keeps being served.

Loose by design: success rate and latency bounds far from the measured figures (docs/operations.md),
so a loaded machine does not fail them; a gateway that lets the floods starve new clients does.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.floods import open_flood, probe
from tests.support.mock_upstream import MockUpstream
from tests.support.processes import GatewayProcess

pytestmark = pytest.mark.integration

IDLE = 2500
KEEPALIVE = 1000
SLOW = 1000
SLOW_HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n{"
)


def test_new_clients_are_served_through_idle_and_slow_floods(tmp_path: Path):
    with MockUpstream("flood") as mock:
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"targets": {"open": {"url": mock.url + "/v1"}}}))
        # More flood connections than Granian's own default backpressure (backlog / workers) would admit.
        with GatewayProcess(path, workers=1, extra_args=["--backlog", "1024"]) as gateway:

            async def run() -> tuple[int, int, float, int]:
                idle = await open_flood(gateway.port, IDLE)
                keepalive = await open_flood(
                    gateway.port, KEEPALIVE, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                slow = await open_flood(gateway.port, SLOW, SLOW_HEAD, trickle_every=2)
                try:
                    result = await probe(gateway.port, 20, timeout=10)
                finally:
                    opened = len(idle.writers) + len(keepalive.writers) + len(slow.writers)
                    for flood in (idle, keepalive, slow):
                        await flood.close()
                return result.ok, result.total, result.p99, opened

            ok, total, p99, opened = asyncio.run(run())
    assert opened >= (IDLE + KEEPALIVE + SLOW) * 0.9
    assert ok >= total - 2, f"{ok}/{total} new clients served"
    assert p99 < 5.0


def test_slow_bodies_are_answered_408_and_closed(tmp_path: Path):
    with MockUpstream("slow") as mock:
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"targets": {"open": {"url": mock.url + "/v1"}}}))
        with GatewayProcess(path, workers=1, extra_args=["--body-timeout-secs", "1"]) as gateway:

            async def run() -> list[bytes]:
                answers = []
                conns = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(50)]
                for _, writer in conns:
                    writer.write(SLOW_HEAD)
                for reader, writer in conns:
                    async with asyncio.timeout(30):
                        answers.append(await reader.read())  # until the gateway closes
                    writer.close()
                return answers

            answers = asyncio.run(run())
        assert mock.requests == []
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers)
