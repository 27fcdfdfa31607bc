"""The pause between two upstream attempts, and the budget that caps the pauses of a request.

With `fallback.backoff` set, a failed attempt N (1-based) is followed by a pause of
`delay_ms(backoff, N)` before attempt N+1, never after the last attempt. The base delay
grows exponentially, `min(initial_ms * factor^(N-1), max_ms)`; full jitter (the default)
draws uniformly from [0, base] so that many clients failing at once do not retry in step.
`max_total_backoff_ms` caps the sum of a request's pauses: a pause that would exceed it is
not taken, the request ends with its last error, and `RetryBudget.exhausted` says so.
The attempt loop keeps no permit of the failed provider while it sleeps.
"""

from __future__ import annotations

import math
import random

from onwards.config.model import Backoff, FallbackSpec


def base_delay_ms(backoff: Backoff, retry: int) -> int:
    """The un-jittered delay before retry `retry` (1-based); 0 for retry 0."""
    if retry <= 0:
        return 0
    try:
        scaled = backoff.initial_ms * backoff.factor ** (retry - 1)
    except OverflowError:
        return backoff.max_ms
    if not math.isfinite(scaled) or scaled >= backoff.max_ms:
        return backoff.max_ms
    if scaled <= 0:
        return 0
    return int(scaled)


def delay_ms(backoff: Backoff, retry: int, rng: random.Random = random._inst) -> int:
    base = base_delay_ms(backoff, retry)
    if backoff.jitter == "none" or base == 0:
        return base
    return rng.randint(0, base)


class RetryBudget:
    """One request's pauses: how long the next one is, and whether the budget allows it."""

    __slots__ = ("_backoff", "_cap", "_rng", "exhausted", "total_ms")

    def __init__(self, fallback: FallbackSpec, rng: random.Random = random._inst) -> None:
        self._backoff = fallback.backoff
        self._cap = fallback.max_total_backoff_ms
        self._rng = rng
        self.total_ms = 0
        self.exhausted = False

    def next_pause_ms(self, failed_attempt: int) -> int | None:
        """The pause to take after attempt `failed_attempt` failed (0 without backoff), or None
        when taking it would exceed max_total_backoff_ms (then retrying stops)."""
        if self._backoff is None:
            return 0
        pause = delay_ms(self._backoff, failed_attempt, self._rng)
        if self._cap is not None and self.total_ms + pause > self._cap:
            self.exhausted = True
            return None
        self.total_ms += pause
        return pause
