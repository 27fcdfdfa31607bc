"""What a Redis failure means for the limiter: an outage, a damaged key, or a misconfiguration.

* A lost or refused connection opens the circuit at once; a timeout opens it only when the next
  call fails too (one slow batch under load must not switch limits off for every request). While it
  is open, the breaker's probe runs every 0.1-0.4 s, jittered, so limiting resumes well within a
  second of Redis answering.
* WRONGTYPE (one damaged key) applies the policy to the requests of that limit only, with a warning
  at most once a minute; the circuit stays closed for every other limit. So do TRYAGAIN and ASK
  still there after their one repeat (a call whose keys are split by a slot migration): the other
  calls of the migrating slot keep running.
* A misconfiguration (see errors.py) is logged once per change, as an error, and kept in `problem`
  for /ready and a metric, until a call succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ResponseError

from onwards.limits.breaker import CircuitBreaker
from onwards.limits.redis.errors import AskRedirect, TryAgainError, misconfiguration

log = logging.getLogger("onwards.limits")

PROBE_BASE_S = 0.1
PROBE_MAX_S = 0.4
# A damaged key (wrong type) is reported at most this often, not once per request.
_KEY_ERROR_LOG_INTERVAL_S = 60.0


def _noop() -> None:
    return None


def _noop_problem(problem: str | None) -> None:
    return None


class RedisHealth:
    def __init__(
        self,
        probe: Callable[[], Awaitable[object]],
        *,
        name: str,
        on_state_change: Callable[[str], None],
        on_error: Callable[[], None] | None = None,
        on_problem: Callable[[str | None], None] | None = None,
        base_delay: float = PROBE_BASE_S,
        max_delay: float = PROBE_MAX_S,
    ) -> None:
        self._on_error = on_error or _noop
        self._on_problem = on_problem or _noop_problem
        self._on_state_change = on_state_change
        self.breaker = CircuitBreaker(
            probe,
            name=name,
            base_delay=base_delay,
            max_delay=max_delay,
            on_state_change=self._state_changed,
            on_probe_error=self.count_error,
        )
        self.problem: str | None = None  # a misconfiguration Redis reported, one line
        # A timeout that has not been followed by a success yet (one per batch: every request of
        # a batch that timed out raises the same exception object).
        self._suspect: BaseException | None = None
        self._last_key_error = float("-inf")

    @property
    def is_open(self) -> bool:
        return self.breaker.is_open

    def succeeded(self) -> None:
        self.breaker.record_success()
        self._suspect = None
        if self.problem is not None:
            self.note_problem(None)

    def failed(self, what: str, exc: BaseException) -> None:
        """A call failed: count it, and open the circuit when that is what it means."""
        self.count_error()
        self.note_problem(exc)
        if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
            self._key_error(what, "failed on a damaged key", exc)
            return
        if isinstance(exc, TryAgainError | AskRedirect):
            self._key_error(what, "hit keys split by a cluster slot migration", exc)
            return
        log.debug("limiter %s failed: %r", what, exc)
        if isinstance(exc, TimeoutError) and (self._suspect is None or self._suspect is exc):
            # One slow call: its requests got the policy. The connection is kept: its late
            # replies settle what it granted.
            self._suspect = exc
            return
        self.breaker.trip(exc)

    def _key_error(self, what: str, why: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_key_error >= _KEY_ERROR_LOG_INTERVAL_S:
            self._last_key_error = now
            log.warning("limiter %s %s (%s); failure policy applied", what, why, exc)

    def start_failed(self, exc: BaseException) -> None:
        self.count_error()
        self.note_problem(exc)
        self.breaker.trip(exc)

    def note_problem(self, exc: BaseException | None) -> None:
        problem = None if exc is None else misconfiguration(exc)
        if exc is not None and problem is None:
            return  # an outage says nothing new about the configuration
        if problem == self.problem:
            return
        self.problem = problem
        if problem is not None:
            log.error("Redis limiter misconfigured: %s (failure policy applies until fixed)", problem)
        else:
            log.info("Redis limiter configuration problem resolved")
        try:
            self._on_problem(problem)
        except Exception:
            log.exception("on_problem hook failed")

    def count_error(self) -> None:
        try:
            self._on_error()
        except Exception:
            log.exception("on_error hook failed")

    def _state_changed(self, state: str) -> None:
        if state == "closed":
            self._suspect = None
        self._on_state_change(state)

    async def close(self) -> None:
        await self.breaker.close()
