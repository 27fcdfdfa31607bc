"""A circuit breaker around the shared limiter's backend.

While the circuit is open, requests do not touch the backend at all: they get the failure policy
at once instead of each waiting out a timeout. One background task per breaker probes the
backend after a cool-down (a tenacity retry loop) and closes the circuit when the probe passes.
The cool-down grows exponentially from `base_delay` up to `max_delay` while the backend keeps
failing, and starts again from the bottom once a real call has succeeded. Each wait is jittered
(between half and all of the cool-down) so the workers of a host do not probe in step. The Redis
limiter uses 0.1 s up to 0.4 s: a probe is one PING, and limits must resume within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Literal

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

State = Literal["closed", "open"]

log = logging.getLogger("onwards.limits")


def _noop_state(state: str) -> None:
    return None


def _noop() -> None:
    return None


class CircuitBreaker:
    def __init__(
        self,
        probe: Callable[[], Awaitable[object]],
        *,
        name: str = "limiter backend",
        base_delay: float = 1.0,
        max_delay: float = 10.0,
        on_state_change: Callable[[str], None] | None = None,
        on_probe_error: Callable[[], None] | None = None,
    ) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError(
                f"breaker delays must satisfy 0 < base_delay <= max_delay, got {base_delay}, {max_delay}"
            )
        self._probe = probe
        self._name = name
        self._base = base_delay
        self._max = max_delay
        self._on_state_change = on_state_change or _noop_state
        self._on_probe_error = on_probe_error or _noop
        self._open = False
        # Failures since the last successful real call; sets the next cool-down.
        self._streak = 0
        self._task: asyncio.Task[None] | None = None
        self._closed_for_good = False

    @property
    def state(self) -> State:
        return "open" if self._open else "closed"

    @property
    def is_open(self) -> bool:
        return self._open

    def cooldown(self) -> float:
        """The wait before the next probe: base * 2**(streak-1), capped."""
        exponent = max(self._streak - 1, 0)
        # Cap the exponent first so a long outage cannot overflow the float.
        return min(self._base * (2 ** min(exponent, 32)), self._max)

    def record_success(self) -> None:
        """A real call worked: the next outage starts again from the shortest cool-down."""
        if self._streak:
            self._streak = 0

    def trip(self, reason: BaseException | str) -> None:
        """Open the circuit after a failure (no-op when already open)."""
        if self._open or self._closed_for_good:
            # Requests that were in flight when the backend died fail too; they say nothing new.
            return
        self._streak += 1
        self._open = True
        log.warning(
            "%s unavailable, circuit open (%s); retrying in %.1fs",
            self._name,
            _describe(reason),
            self.cooldown(),
        )
        self._notify("open")
        self._task = asyncio.get_running_loop().create_task(self._recover(), name=f"{self._name} probe")

    def _jittered(self) -> float:
        return self.cooldown() * (0.5 + random.random() / 2)

    async def _recover(self) -> None:
        await asyncio.sleep(self._jittered())
        # tenacity runs the probe until it passes; `after` lengthens the streak (and so the next
        # cool-down) before `wait` reads it.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            after=self._probe_failed,
            wait=lambda _: self._jittered(),
        ):
            with attempt:
                await self._probe()
        self._open = False
        self._task = None
        log.info("%s reachable again, circuit closed", self._name)
        self._notify("closed")

    def _probe_failed(self, state: RetryCallState) -> None:
        self._streak += 1
        self._on_probe_error()
        error = state.outcome.exception() if state.outcome is not None else None
        log.debug("%s probe failed (%s); next in %.1fs", self._name, _describe(error or "?"), self.cooldown())

    def _notify(self, state: str) -> None:
        try:
            self._on_state_change(state)
        except Exception:
            # A metrics hook must never break admission.
            log.exception("on_state_change hook failed")

    async def close(self) -> None:
        """Stop probing (shutdown)."""
        self._closed_for_good = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _describe(reason: BaseException | str) -> str:
    if isinstance(reason, str):
        return reason
    text = str(reason)
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
