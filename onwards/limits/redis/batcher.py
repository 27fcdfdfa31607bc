"""Per event-loop iteration, every admission and release of a worker goes out in one write.

The admissions of one iteration travel as one admit.lua call and its releases (with the token
settlements) as one release.lua call, both written together on the transport (releases first:
an admission in the same batch may need the permit one gives back). Under load this turns
thousands of script calls a second into a few hundred, on both sides of the connection. Every
admission of a batch waits at most one `timeout` (one timer per batch, not one per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError

from onwards.limits.redis.encoding import Admission, AdmitPlan, Encoder, Release, Settlement
from onwards.limits.redis.transport import Transport


class Batcher:
    def __init__(
        self,
        encoder: Encoder,
        transport: Transport,
        *,
        resend: Callable[[bytes], Awaitable[Any]],
        on_released: Callable[[BaseException | None], None],
    ) -> None:
        self._encoder = encoder
        self._transport: Transport | None = transport
        # Sends a packed call again after loading the scripts (a NOSCRIPT reply).
        self._resend = resend
        # Told the outcome of every release call: None when it went through.
        self._on_released = on_released
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
        self, done: asyncio.Future[Any], admits: list[Admission], timer: asyncio.TimerHandle
    ) -> None:
        exc = done.exception() if not done.cancelled() else ConnectionError("admission batch cancelled")
        if isinstance(exc, NoScriptError):
            # Redis restarted or was flushed: reload the scripts and send the same batch again,
            # still within the batch's timeout.
            retry = asyncio.ensure_future(self._resend(self._encoder.pack_admits(admits)))
            retry.add_done_callback(lambda again: self._admitted(again, admits, timer))
            return
        timer.cancel()
        for i, (plan, lease_id, cost, future) in enumerate(admits):
            if future.done():
                # Its request timed out or went away. Had it been admitted, its permits and its
                # reserved tokens go back.
                if exc is None and admitted(done.result()[i]):
                    if lease_id:
                        self.release(plan.semaphores, lease_id)
                    if cost and plan.token_checks:
                        for check in plan.token_checks:
                            self.settle(self._encoder.settlement(check, cost))
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(done.result()[i])

    def _released(
        self, done: asyncio.Future[Any], releases: list[Release], settlements: list[Settlement]
    ) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if isinstance(exc, NoScriptError):
            retry = asyncio.ensure_future(self._resend(self._encoder.pack_releases(releases, settlements)))
            retry.add_done_callback(lambda again: self._released(again, releases, settlements))
            return
        self._on_released(exc)


def admitted(reply: Any) -> bool:
    """Whether one admit.lua result admitted its request (0, or a list starting with 0)."""
    return reply == 0 or (type(reply) is list and reply[0] == 0)


def _timed_out(admits: list[Admission]) -> None:
    for _, _, _, future in admits:
        if not future.done():
            future.set_exception(TimeoutError("Redis did not answer within redis_timeout_ms"))
