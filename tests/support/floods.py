"""Bounded connection floods on loopback, and a normal client probing through them.

Used by the edge flood tests and to measure the figures in docs/operations.md. Every flood is a
fixed number of connections to 127.0.0.1, closed when the flood ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

PROBE = b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"


@dataclass
class Flood:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    failed: int = 0
    trickle: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.trickle is not None:
            self.trickle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.trickle
        for writer in self.writers:
            writer.close()
        self.writers.clear()


async def open_flood(port: int, count: int, first: bytes = b"", trickle_every: float | None = None) -> Flood:
    """`count` connections that send `first` and then nothing (or one byte every `trickle_every` s)."""
    flood = Flood()

    async def one() -> None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError):
            flood.failed += 1
            return
        if first:
            writer.write(first)
        flood.writers.append(writer)

    for start in range(0, count, 500):  # in batches, so the listen backlog is not the limit measured
        await asyncio.gather(*(one() for _ in range(min(500, count - start))))

    async def trickle(every: float) -> None:
        while True:
            await asyncio.sleep(every)
            for writer in list(flood.writers):
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write(b" ")

    if trickle_every is not None:
        flood.trickle = asyncio.get_running_loop().create_task(trickle(trickle_every))
    return flood


@dataclass
class ProbeResult:
    ok: int
    total: int
    latencies: list[float]

    @property
    def p50(self) -> float:
        return _pct(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        return _pct(self.latencies, 0.99)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe(port: int, count: int, timeout: float = 10.0, pause: float = 0.05) -> ProbeResult:
    """`count` requests of a normal client, each on a new connection, one after the other."""
    ok = 0
    latencies: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(PROBE)
                status = await reader.readline()
                await reader.read()
                writer.close()
            if status.startswith(b"HTTP/1.1 200"):
                ok += 1
                latencies.append(time.perf_counter() - started)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(pause)
    return ProbeResult(ok, count, latencies)
