"""Limits kept in this process: the embedded default when no Redis is configured.

Same semantics as the Redis scripts (all-or-nothing admission, fractional refill, clamp to the
current burst, leases that expire), but every worker process counts on its own: with N workers a
limit admits up to N times its value in total. Nothing here awaits, so each call runs to the end
without another request interleaving, which is what makes it safe on one event loop without locks.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

from onwards.config.model import Check, ConcurrencyCheck, LimitsSettings, RateCheck
from onwards.limits.base import ALLOW, Decision, Lease
from onwards.limits.keys import validate_checks, validate_settings

_MAX_VALIDATED = 4096


class MemoryLimiter:
    def __init__(
        self, settings: LimitsSettings | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        # limiter id -> [tokens, time of last update, time the bucket is full again]
        self._buckets: dict[str, list[float]] = {}
        # limiter id -> {lease id: expiry}
        self._semaphores: dict[str, dict[str, float]] = {}
        self._validated: set[tuple[Check, ...]] = set()
        self.configure(settings or LimitsSettings())

    async def start(self, settings: LimitsSettings) -> None:
        self.configure(settings)

    async def close(self) -> None:
        self._buckets.clear()
        self._semaphores.clear()

    def configure(self, settings: LimitsSettings) -> None:
        validate_settings(settings)
        self._settings = settings
        self._ttl_s = settings.lease_ttl_ms / 1000
        self._validated.clear()
        self._sweep()

    @property
    def healthy(self) -> bool:
        return True

    @property
    def state(self) -> str:
        return "closed"

    @property
    def problem(self) -> str | None:
        return None  # nothing to misconfigure in-process

    @property
    def description(self) -> str:
        return (
            "in-process limits: each worker process counts on its own (N workers admit up to N times a limit)"
        )

    @property
    def settings(self) -> LimitsSettings:
        return self._settings

    async def admit(self, checks: Sequence[Check]) -> Decision:
        if not checks:
            return ALLOW
        if type(checks) is not tuple:
            checks = tuple(checks)
        if checks not in self._validated:
            validate_checks(checks)
            if len(self._validated) >= _MAX_VALIDATED:
                self._validated.clear()
            self._validated.add(checks)

        now = self._clock()
        buckets = self._buckets
        semaphores = self._semaphores
        # Phase one decides without changing anything; `claimed` holds bucket levels after this
        # request's claims so that a bucket listed twice needs two tokens.
        claimed: dict[str, float] = {}
        stamps: dict[str, float] = {}
        has_semaphore = False
        for check in checks:
            limiter_id = check.limiter_id
            if type(check) is RateCheck:
                rate = check.rate
                burst = check.burst
                tokens = claimed.get(limiter_id)
                if tokens is None:
                    state = buckets.get(limiter_id)
                    if state is None:
                        tokens = burst
                        stamps[limiter_id] = now
                    elif state[1] > now:
                        # Only an injected clock can step back; time stands still until it catches up.
                        tokens = state[0]
                        stamps[limiter_id] = state[1]
                    else:
                        tokens = state[0] + (now - state[1]) * rate
                        stamps[limiter_id] = now
                if tokens > burst:
                    tokens = burst  # also applies a reload that lowered the burst
                if tokens < 1:
                    wait = _wait(stamps[limiter_id] - now, tokens, rate)
                    return Decision(allowed=False, refused=check, retry_after=wait)
                claimed[limiter_id] = tokens - 1
            else:
                assert isinstance(check, ConcurrencyCheck)
                limit = check.limit
                if limit < 1:
                    return Decision(allowed=False, refused=check)
                held = semaphores.get(limiter_id)
                if held is not None and len(held) >= limit:
                    # Expired leases are only swept when they are in the way.
                    for lease_id in [lease_id for lease_id, expiry in held.items() if expiry <= now]:
                        del held[lease_id]
                    if len(held) >= limit:
                        return Decision(allowed=False, refused=check)
                has_semaphore = True

        for check in checks:
            if type(check) is RateCheck:
                tokens = claimed[check.limiter_id]
                stamp = stamps[check.limiter_id]
                buckets[check.limiter_id] = [tokens, stamp, stamp + (check.burst - tokens) / check.rate]
        if not has_semaphore:
            return ALLOW
        lease_id = os.urandom(16).hex()
        expiry = now + self._ttl_s
        acquired: list[str] = []
        for check in checks:
            if type(check) is not RateCheck:
                semaphores.setdefault(check.limiter_id, {})[lease_id] = expiry
                acquired.append(check.limiter_id)
        return Decision(allowed=True, lease=Lease(lease_id, tuple(acquired), self._settings.lease_ttl_ms))

    async def release(self, lease: Lease) -> None:
        self.release_soon(lease)

    def release_soon(self, lease: Lease) -> None:
        for limiter_id in lease.limiter_ids:
            held = self._semaphores.get(limiter_id)
            if held is not None:
                held.pop(lease.lease_id, None)
                if not held:
                    del self._semaphores[limiter_id]

    @property
    def releases_pending(self) -> bool:
        return False  # a release here is done when release_soon returns

    async def renew(self, lease: Lease) -> None:
        # Like the script: a lease that is gone is not re-created, its permit may be someone else's.
        expiry = self._clock() + lease.ttl_ms / 1000
        for limiter_id in lease.limiter_ids:
            held = self._semaphores.get(limiter_id)
            if held is not None and lease.lease_id in held:
                held[lease.lease_id] = expiry

    def _sweep(self) -> None:
        """Forget buckets that are full again and semaphores nobody holds (an absent one is the same)."""
        now = self._clock()
        for limiter_id in [k for k, state in self._buckets.items() if state[2] <= now]:
            del self._buckets[limiter_id]
        for limiter_id, held in list(self._semaphores.items()):
            for lease_id in [lease_id for lease_id, expiry in held.items() if expiry <= now]:
                del held[lease_id]
            if not held:
                del self._semaphores[limiter_id]


def _wait(ahead: float, tokens: float, rate: float) -> float:
    """Seconds until the bucket holds a whole token, in whole milliseconds like the script."""
    return max(math.ceil((ahead + (1 - tokens) / rate) * 1000), 1) / 1000
