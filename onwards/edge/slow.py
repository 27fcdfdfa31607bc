"""Slow request bodies: one sweeper per worker instead of a timer per request.

Rule: a request whose body is not fully received within `--body-timeout-secs` is cancelled by the
sweeper and answered 408 (onwards/proxy/intake.py). The sweeper looks once per SWEEP_S (or per half
the timeout, when that is shorter), so the timeout fires up to that much late; in exchange a request
pays a dict insert and delete instead of the ~10 µs an asyncio.timeout costs per request on the hot
path (measured in docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

SWEEP_S = 1.0


class BodyWatch:
    """Requests reading their body, by task, with their deadline."""

    def __init__(self, timeout_secs: float) -> None:
        self.timeout_secs = timeout_secs
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def begin(self, task: asyncio.Task[Any]) -> None:
        self.reading[task] = time.monotonic() + self.timeout_secs

    def end(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching `task`; True when it was cancelled for being too slow."""
        self.reading.pop(task, None)
        if task in self.expired:
            self.expired.discard(task)
            return True
        return False

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _sweep(self) -> None:
        interval = min(SWEEP_S, self.timeout_secs / 2)
        while True:
            await asyncio.sleep(interval)
            if not self.reading:
                continue
            now = time.monotonic()
            late = [task for task, deadline in self.reading.items() if deadline <= now]
            for task in late:
                del self.reading[task]
                self.expired.add(task)
                task.cancel("request body too slow")
