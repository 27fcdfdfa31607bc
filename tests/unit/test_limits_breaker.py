"""The circuit breaker: one probe task, growing cool-downs, one log line per state change."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from onwards.limits.breaker import CircuitBreaker


class Probe:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.concurrent = 0
        self.max_concurrent = 0

    async def __call__(self) -> None:
        self.calls += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await asyncio.sleep(0)
            if self.failures > 0:
                self.failures -= 1
                raise ConnectionError("still down")
        finally:
            self.concurrent -= 1


async def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_cooldown_grows_exponentially_up_to_the_cap() -> None:
    breaker = CircuitBreaker(Probe(0), base_delay=1.0, max_delay=10.0)
    seen = []
    for _ in range(7):
        breaker._streak += 1
        seen.append(breaker.cooldown())
    assert seen == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    breaker._streak = 10_000
    assert breaker.cooldown() == 10.0
    breaker.record_success()
    breaker._streak += 1
    assert breaker.cooldown() == 1.0


def test_delays_are_validated() -> None:
    with pytest.raises(ValueError, match="base_delay"):
        CircuitBreaker(Probe(0), base_delay=0)
    with pytest.raises(ValueError, match="max_delay"):
        CircuitBreaker(Probe(0), base_delay=2, max_delay=1)


async def test_trip_opens_once_and_probe_closes(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="onwards.limits")
    states: list[str] = []
    probe_errors = []
    probe = Probe(failures=2)
    breaker = CircuitBreaker(
        probe,
        name="test backend",
        base_delay=0.01,
        max_delay=0.02,
        on_state_change=states.append,
        on_probe_error=lambda: probe_errors.append(1),
    )
    assert breaker.state == "closed" and not breaker.is_open
    for _ in range(5):  # a burst of failing requests opens the circuit once
        breaker.trip(ConnectionError("refused"))
    assert breaker.state == "open"
    assert states == ["open"]
    await wait_for(lambda: breaker.state == "closed")
    assert states == ["open", "closed"]
    assert probe.calls == 3 and len(probe_errors) == 2
    assert probe.max_concurrent == 1
    levels = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert len(levels) == 2
    assert levels[0][0] == logging.WARNING and "test backend unavailable" in levels[0][1]
    assert "ConnectionError: refused" in levels[0][1]
    assert levels[1][0] == logging.INFO and "circuit closed" in levels[1][1]
    await breaker.close()


async def test_failed_probes_lengthen_the_cooldown_until_a_real_success() -> None:
    breaker = CircuitBreaker(Probe(failures=3), base_delay=0.01, max_delay=1.0)
    breaker.trip("down")
    await wait_for(lambda: breaker.state == "closed")
    # One trip and three failed probes: the next outage waits 2**4 times the base.
    breaker.trip("down again")
    assert breaker.cooldown() == pytest.approx(0.16)
    await breaker.close()
    breaker.record_success()
    assert breaker.cooldown() == pytest.approx(0.01)


async def test_close_stops_the_probe_and_later_trips() -> None:
    probe = Probe(failures=1_000_000)
    breaker = CircuitBreaker(probe, base_delay=0.01, max_delay=0.01)
    breaker.trip("down")
    await wait_for(lambda: probe.calls >= 2)
    await breaker.close()
    calls = probe.calls
    await asyncio.sleep(0.05)
    assert probe.calls == calls
    breaker.trip("down")  # after shutdown nothing is scheduled any more
    assert breaker._task is None
