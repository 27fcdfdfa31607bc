"""Limits kept in this process: the embedded default when no Redis is configured.

Same semantics as the Redis scripts (all-or-nothing admission, fractional refill, clamp to the
current burst, leases that expire, token reservations settled to the usage), but every worker
process counts on its own: with N workers a limit admits up to N times its value in total.
Nothing here awaits, so each call runs to the end without another request interleaving, which is
what makes it safe on one event loop without locks.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

from onwards.config.model import Check, ConcurrencyCheck, LimitsSettings, RateCheck, TokenCheck
from onwards.limits.base import ALLOW, Decision, Headroom, Lease, Reservation
from onwards.limits.keys import validate_checks, validate_settings

_MAX_VALIDATED = 4096


class MemoryLimiter:
    def __init__(
        self, settings: LimitsSettings | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        # limiter id -> [level, time of last update, time the bucket is full again], for request
        # buckets and for token buckets apart (a scope may have both under one limiter id)
        self._buckets: dict[str, list[float]] = {}
        self._tokens: dict[str, list[float]] = {}
        # limiter id -> {lease id: expiry}
        self._semaphores: dict[str, dict[str, float]] = {}
        self._validated: set[tuple[Check, ...]] = set()
        self.configure(settings or LimitsSettings())

    async def start(self, settings: LimitsSettings) -> None:
        self.configure(settings)

    async def close(self) -> None:
        self._buckets.clear()
        self._tokens.clear()
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

    async def admit(self, checks: Sequence[Check], tokens: int = 0) -> Decision:
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
        # Phase one decides without changing anything; `claimed` holds bucket levels after this
        # request's claims so that a bucket listed twice is charged twice.
        claimed: dict[tuple[bool, str], float] = {}
        stamps: dict[tuple[bool, str], float] = {}
        has_semaphore = has_bucket = False
        for check in checks:
            kind = type(check)
            if kind is RateCheck or kind is TokenCheck:
                assert isinstance(check, RateCheck | TokenCheck)
                has_bucket = True
                need = 1 if kind is RateCheck else tokens
                if need > check.burst:
                    return Decision(allowed=False, refused=check, hopeless=True)
                slot = (kind is TokenCheck, check.limiter_id)
                level = claimed.get(slot)
                if level is None:
                    level = self._level(slot, check.rate, now, stamps)
                if level > check.burst:
                    level = check.burst  # also applies a reload that lowered the burst
                if level < need:
                    wait = _wait(stamps[slot] - now, need - level, check.rate)
                    return Decision(allowed=False, refused=check, retry_after=wait)
                claimed[slot] = level - need
            else:
                assert isinstance(check, ConcurrencyCheck)
                if not self._has_room(check, now):
                    return Decision(allowed=False, refused=check)
                has_semaphore = True

        if not has_bucket and not has_semaphore:
            return ALLOW
        return self._commit(checks, tokens, now, claimed, stamps, has_semaphore)

    def _level(
        self, slot: tuple[bool, str], rate: float, now: float, stamps: dict[tuple[bool, str], float]
    ) -> float:
        """A bucket's level refilled to now (inf for a missing bucket: full, clamped by the caller)."""
        state = (self._tokens if slot[0] else self._buckets).get(slot[1])
        if state is None:
            stamps[slot] = now
            return math.inf
        if state[1] > now:
            # Only an injected clock can step back; time stands still until it catches up.
            stamps[slot] = state[1]
            return state[0]
        stamps[slot] = now
        return state[0] + (now - state[1]) * rate

    def _has_room(self, check: ConcurrencyCheck, now: float) -> bool:
        if check.limit < 1:
            return False
        held = self._semaphores.get(check.limiter_id)
        if held is not None and len(held) >= check.limit:
            # Expired leases are only swept when they are in the way.
            for lease_id in [lease_id for lease_id, expiry in held.items() if expiry <= now]:
                del held[lease_id]
            return len(held) < check.limit
        return True

    def _commit(
        self,
        checks: tuple[Check, ...],
        tokens: int,
        now: float,
        claimed: dict[tuple[bool, str], float],
        stamps: dict[tuple[bool, str], float],
        has_semaphore: bool,
    ) -> Decision:
        """Phase two: take what phase one found, and report the tightest bucket of each kind."""
        tight: dict[bool, Headroom] = {}
        reserved: list[TokenCheck] = []
        done: set[tuple[bool, str]] = set()
        for check in checks:
            if type(check) is ConcurrencyCheck:
                continue
            assert isinstance(check, RateCheck | TokenCheck)
            is_token = type(check) is TokenCheck
            if is_token:
                assert isinstance(check, TokenCheck)
                reserved.append(check)
            slot = (is_token, check.limiter_id)
            if slot in done:
                continue
            done.add(slot)
            level = claimed[slot]
            stamp = stamps[slot]
            full_s = stamp - now + (check.burst - level) / check.rate
            (self._tokens if is_token else self._buckets)[check.limiter_id] = [level, stamp, now + full_s]
            left = math.floor(level)
            best = tight.get(is_token)
            if best is None or left < best.remaining:
                # Whole milliseconds, rounded up, as the script reports them.
                tight[is_token] = Headroom(check.burst, left, math.ceil(full_s * 1000) / 1000)
        reservation = Reservation(tuple(reserved), tokens) if reserved else None
        lease = None
        if has_semaphore:
            lease_id = os.urandom(16).hex()
            expiry = now + self._ttl_s
            acquired: list[str] = []
            for check in checks:
                if type(check) is ConcurrencyCheck:
                    self._semaphores.setdefault(check.limiter_id, {})[lease_id] = expiry
                    acquired.append(check.limiter_id)
            lease = Lease(lease_id, tuple(acquired), self._settings.lease_ttl_ms)
        return Decision(
            allowed=True,
            lease=lease,
            reservation=reservation,
            requests=tight.get(False),
            tokens=tight.get(True),
        )

    def settle_soon(self, reservation: Reservation, used: int) -> None:
        delta = reservation.tokens - used
        now = self._clock()
        for check in reservation.checks:
            state = self._tokens.get(check.limiter_id)
            if state is None:
                level, stamp = float(check.burst), now  # missing is full
            elif state[1] > now:
                level, stamp = state[0], state[1]
            else:
                level, stamp = state[0] + (now - state[1]) * check.rate, now
            level = min(level, check.burst) + delta
            if level >= check.burst:
                self._tokens.pop(check.limiter_id, None)
            else:
                full_at = stamp + (check.burst - level) / check.rate
                self._tokens[check.limiter_id] = [level, stamp, full_at]

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
        for buckets in (self._buckets, self._tokens):
            for limiter_id in [k for k, state in buckets.items() if state[2] <= now]:
                del buckets[limiter_id]
        for limiter_id, held in list(self._semaphores.items()):
            for lease_id in [lease_id for lease_id, expiry in held.items() if expiry <= now]:
                del held[lease_id]
            if not held:
                del self._semaphores[limiter_id]


def _wait(ahead: float, missing: float, rate: float) -> float:
    """Seconds until the bucket holds what is missing, in whole milliseconds like the script."""
    return max(math.ceil((ahead + missing / rate) * 1000), 1) / 1000
