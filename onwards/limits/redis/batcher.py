"""Per event-loop iteration, every admission and release of a worker goes out in one write.

The admissions of one iteration travel as one admit.lua call and its releases (with the token
settlements) as one release.lua call, both written together on the transport (releases first: an
admission in the same batch may need the permit one gives back). Under load this turns thousands
of script calls a second into a few hundred, on both sides of the connection. Every admission of a
batch waits at most one `timeout` (one timer per batch, not one per request).

No permit is orphaned by a failure here:

* a release that could not be sent, or whose call failed, is kept ("owed") and sent again with the
  next batch once Redis answers; the owed list is bounded (the oldest are dropped, counted, and
  come back by their lease expiry);
* an admission whose reply came after its request gave up is released as soon as the reply shows
  it was granted; one whose reply never came (the connection was lost) is released blindly by its
  lease ids, which removes nothing if Redis never ran it (its reserved tokens stay spent: a lost
  reply cannot say whether Redis took them, and over-charging is the safe side);
* NOSCRIPT, MOVED, READONLY, ASK and TRYAGAIN mean the call did not run: it goes once more (see
  the limiter's _resend: found again, or sent to the importing node of a slot migration, or
  repeated after a short pause). A batch stays one script call on the one node it goes to.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from onwards.limits.redis.encoding import Admission, AdmitPlan, Encoder, Release, Settlement
from onwards.limits.redis.errors import NOT_RUN
from onwards.limits.redis.transport import Transport

# Owed (semaphore, lease) pairs kept while Redis cannot take them: a worker's in-flight requests
# many times over. Past this the oldest go, and their lease expiry gives the permits back.
MAX_OWED = 50_000


def _noop_deferred(result: str, count: int) -> None:
    return None


class Batcher:
    def __init__(
        self,
        encoder: Encoder,
        transport: Transport,
        *,
        resend: Callable[[BaseException, bytes], Awaitable[Any]],
        on_released: Callable[[BaseException | None], None],
        on_deferred: Callable[[str, int], None] = _noop_deferred,
        forget: Callable[[str, tuple[str, ...]], None] | None = None,
    ) -> None:
        self._encoder = encoder
        self._transport: Transport | None = transport
        # Sends a packed call again after a reply that says it did not run (NOT_RUN).
        self._resend = resend
        # Told the outcome of every release call: None when it went through.
        self._on_released = on_released
        # Counts owed releases: ("kept", n) when kept for later, ("dropped", n) past MAX_OWED.
        self._on_deferred = on_deferred
        # Told of every lease this batcher gives back on its own (see recovery.py).
        self._forget = forget or (lambda lease_id, limiter_ids: None)
        self._owed: collections.deque[Release] = collections.deque()
        self.timeout = 0.25
        self._admits: list[Admission] = []
        self._releases: list[Release] = []
        self._settlements: list[Settlement] = []
        self._scheduled = False

    @property
    def releases_pending(self) -> bool:
        return bool(self._releases or self._settlements)

    def admit(self, plan: AdmitPlan, lease_id: str, cost: int = 0) -> asyncio.Future[Any]:
        """Queue one admission for this iteration's write; the future gets its script reply."""
        future = asyncio.get_running_loop().create_future()
        self._admits.append((plan, lease_id, cost, future))
        self._schedule()
        return future

    def settle(self, settlement: Settlement) -> None:
        """Queue one token settlement; it goes out in this iteration's release call."""
        self._settlements.append(settlement)
        self._schedule()

    def release(self, limiter_ids: tuple[str, ...], lease_id: str) -> None:
        """Queue the release of one lease for this iteration's write."""
        lease = lease_id.encode()
        key = self._encoder.semaphore_key
        self._releases.extend((key(limiter_id), lease) for limiter_id in limiter_ids)
        self._schedule()

    @property
    def owed(self) -> int:
        return len(self._owed)

    def owe(self, pairs: list[Release]) -> None:
        """Keep releases Redis could not take, to send when it answers again (see resume)."""
        if not pairs:
            return
        self._owed.extend(pairs)
        self._on_deferred("kept", len(pairs))
        excess = len(self._owed) - MAX_OWED
        if excess > 0:
            for _ in range(excess):
                self._owed.popleft()
            self._on_deferred("dropped", excess)

    def owe_lease(self, limiter_ids: tuple[str, ...], lease_id: str) -> None:
        key = self._encoder.semaphore_key
        lease = lease_id.encode()
        self.owe([(key(limiter_id), lease) for limiter_id in limiter_ids])

    def resume(self) -> None:
        """Redis answers again: the owed releases go out with the next write."""
        if self._owed and self._transport is not None:
            self._releases.extend(self._owed)
            self._owed.clear()
            self._schedule()

    def close(self) -> None:
        self._transport = None

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        admits, self._admits = self._admits, []
        releases, self._releases = self._releases, []
        settlements, self._settlements = self._settlements, []
        transport = self._transport
        if transport is None:  # closed meanwhile
            for _, _, _, future in admits:
                if not future.done():
                    future.set_exception(ConnectionError("RedisLimiter is closed"))
            return
        packed: list[bytes] = []
        callbacks: list[Callable[[asyncio.Future[Any]], None]] = []
        if releases or settlements:
            packed.append(self._encoder.pack_releases(releases, settlements))
            callbacks.append(lambda done: self._released(done, releases, settlements))
        if admits:
            packed.append(self._encoder.pack_admits(admits))
            timer = asyncio.get_running_loop().call_later(self.timeout, _timed_out, admits)
            callbacks.append(lambda done: self._admitted(done, admits, timer))
        if not packed:
            return
        futures = transport.send_now(packed)
        if futures is None:
            # No open connection: a task opens one (single flight) and sends.
            futures = [asyncio.ensure_future(transport.execute_packed(one)) for one in packed]
        for future, callback in zip(futures, callbacks, strict=True):
            future.add_done_callback(callback)

    def _admitted(
        self,
        done: asyncio.Future[Any],
        admits: list[Admission],
        timer: asyncio.TimerHandle,
        retried: bool = False,
    ) -> None:
        exc = done.exception() if not done.cancelled() else ConnectionError("admission batch cancelled")
        if not retried and isinstance(exc, NOT_RUN):
            # Redis restarted or was flushed, the keys live elsewhere, or the slot is migrating:
            # the call did not run. Send the same batch again, still within the batch's timeout.
            retry = asyncio.ensure_future(self._resend(exc, self._encoder.pack_admits(admits)))
            retry.add_done_callback(lambda again: self._admitted(again, admits, timer, True))
            return
        timer.cancel()
        if exc is not None and not isinstance(exc, NOT_RUN):
            # No reply (the connection was lost) or a script error part-way through the batch:
            # any of these admissions may hold permits now. Give them all back; removing a lease
            # that Redis never added removes nothing.
            for plan, lease_id, _, _ in admits:
                if lease_id:
                    self._forget(lease_id, plan.semaphores)
                    self.owe_lease(plan.semaphores, lease_id)
        else:
            self._resume_on_success(exc)
        for i, (plan, lease_id, cost, future) in enumerate(admits):
            if future.done():
                # Its request timed out or went away. Had it been admitted, its permits and its
                # reserved tokens go back.
                if exc is None and admitted(done.result()[i]):
                    if lease_id:
                        self._forget(lease_id, plan.semaphores)
                        self.release(plan.semaphores, lease_id)
                    if cost and plan.token_checks:
                        for check in plan.token_checks:
                            self.settle(self._encoder.settlement(check, cost))
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(done.result()[i])

    def _released(
        self,
        done: asyncio.Future[Any],
        releases: list[Release],
        settlements: list[Settlement],
        retried: bool = False,
    ) -> None:
        exc = done.exception() if not done.cancelled() else ConnectionError("release batch cancelled")
        if not retried and isinstance(exc, NOT_RUN):
            packed = self._encoder.pack_releases(releases, settlements)
            retry = asyncio.ensure_future(self._resend(exc, packed))
            retry.add_done_callback(lambda again: self._released(again, releases, settlements, True))
            return
        if exc is not None and (isinstance(exc, NOT_RUN) or not isinstance(exc, ResponseError)):
            # Not sent, not run, or no answer: the permits are sent again when Redis answers. Settlements
            # are not kept: one that is lost leaves its reservation spent (over-charged, never
            # under), and sending it twice after an unknown outcome could refund twice.
            self.owe(releases)
        self._resume_on_success(exc)
        self._on_released(exc)

    def _resume_on_success(self, exc: BaseException | None) -> None:
        if exc is None and self._owed:
            self.resume()


def admitted(reply: Any) -> bool:
    """Whether one admit.lua result admitted its request (0, or a list starting with 0)."""
    return reply == 0 or (type(reply) is list and reply[0] == 0)


def _timed_out(admits: list[Admission]) -> None:
    # One exception for the whole batch: its requests report one failure, not one each.
    exc = TimeoutError("Redis did not answer within redis_timeout_ms")
    for _, _, _, future in admits:
        if not future.done():
            future.set_exception(exc)
