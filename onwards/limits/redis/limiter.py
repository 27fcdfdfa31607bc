"""Cluster-wide limits: token buckets and leased semaphores in Redis, one script call per request.

The scripts in ``lua/`` (shipped as the package ``onwards.lua``) are the specification. This
module is the policy around them: what a reply means (admitted, refused by which check, for how
long a bucket is known empty), and what a failure means (the failure policy, the circuit breaker,
a damaged key that must not switch every other limit off, a misconfiguration that is reported
rather than waited out). The encoding of checks is in encoding.py, the per-iteration batching and
the keeping of releases in batcher.py, the re-registration of held leases in recovery.py, the
connection in transport.py.

What each failure means is in health.py. A connection is kept through a stall, so late replies
still arrive and settle what they granted; it is dropped only after it has been silent for STUCK_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from onwards.config.model import Check, LimitsSettings, RateCheck
from onwards.limits.base import ALLOW, Decision, Lease, LimiterUnavailable, Reservation
from onwards.limits.keys import DEFAULT_PREFIX, KeySpace, validate_settings
from onwards.limits.redis.batcher import Batcher
from onwards.limits.redis.encoding import AdmitPlan, Encoder, headroom, load_scripts, num
from onwards.limits.redis.errors import (
    NOT_RUN,
    AskRedirect,
    RedirectError,
    TryAgainError,
    misconfiguration,
)
from onwards.limits.redis.health import PROBE_BASE_S, PROBE_MAX_S, RedisHealth
from onwards.limits.redis.recovery import LeaseBook
from onwards.limits.redis.transport import Transport, open_transport, pack_command
from onwards.limits.redis.url import parse_redis_url

log = logging.getLogger("onwards.limits")

# Errors that mean "Redis did not answer usefully". Anything else is a bug and propagates.
_FAILURES = (RedisError, OSError, TimeoutError)
# How long a refusal is remembered locally (see admit).
_EMPTY_MEMORY_S = 1.0
# What a gateway worker allows itself to load the scripts at start (see RedisLimiter.start).
WORKER_START_TIMEOUT_S = 2.0
# A connection with calls waiting and no reply for this long is dropped (a peer that vanished);
# a shorter stall keeps it, so the late replies settle the permits they granted.
STUCK_S = 10.0
# The pause before repeating a call that got TRYAGAIN (its keys were mid-MIGRATE): one MIGRATE of
# a gateway's few small keys takes well under this; the batch's timeout still bounds the wait.
TRYAGAIN_PAUSE_S = 0.02


def _noop_deferred(result: str, count: int) -> None:
    return None


def _noop_state(state: str) -> None:
    return None


class RedisLimiter:
    """Limits shared by every worker process of every replica that points at one Redis."""

    def __init__(
        self,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        settings: LimitsSettings | None = None,
        *,
        hash_tag: str | None = None,
        transport: Transport | None = None,
        on_state_change: Callable[[str], None] | None = None,
        on_error: Callable[[], None] | None = None,
        on_problem: Callable[[str | None], None] | None = None,
        on_deferred: Callable[[str, int], None] | None = None,
        cooldown_s: float = PROBE_BASE_S,
        max_cooldown_s: float = PROBE_MAX_S,
        start_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (url is None) == (transport is None):
            raise ValueError("RedisLimiter needs exactly one of a Redis url or a transport")
        self.keys = KeySpace(prefix, hash_tag or "")
        if url is not None:
            target = parse_redis_url(url)
            self._where = target.redacted
            transport = open_transport(target, slot_tag=self.keys.tag)
        else:
            self._where = "injected transport"
        assert transport is not None
        self._transport: Transport | None = transport
        self._owns_transport = url is not None
        transport.on_change = self._connection_changed
        self._clock = clock  # for the local "bucket known empty" memory only; Redis keeps the time
        # The bound of the script load in start(); None means redis_timeout_ms. Starting is not a
        # request: a process's first connection costs far more than later ones, and on a busy host
        # (every worker starting at once) a request-sized bound failed while Redis was fine,
        # leaving a fresh worker to serve under the failure policy until the breaker's probe.
        self._start_timeout = start_timeout_s
        self._encoder = Encoder(self.keys)
        self._book = LeaseBook(self.keys)
        transport.on_connect = self._book.greet
        self._batcher = Batcher(
            self._encoder,
            transport,
            resend=self._resend,
            on_released=self._released,
            on_deferred=on_deferred or _noop_deferred,
            forget=self._book.drop,
        )
        self._on_state_change = on_state_change or _noop_state
        self._health = RedisHealth(
            self._probe,
            name=f"Redis limiter ({self._where})",
            on_state_change=self._state_changed,
            on_error=on_error,
            on_problem=on_problem,
            base_delay=cooldown_s,
            max_delay=max_cooldown_s,
        )
        self._breaker = self._health.breaker
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False
        self.configure(settings or LimitsSettings())

    # -- lifecycle -------------------------------------------------------------------------

    def configure(self, settings: LimitsSettings) -> None:
        validate_settings(settings)
        self._settings = settings
        self._timeout = settings.redis_timeout_ms / 1000
        self._batcher.timeout = self._timeout
        self._encoder.configure(settings.lease_ttl_ms)
        self._book.ttl_ms = settings.lease_ttl_ms
        if settings.on_redis_error == "allow":
            self._fallback: Decision | None = Decision(allowed=True, degraded=True)
        else:
            self._fallback = None
        # A reload may raise a rate: what was known empty under the old one is not any more.
        self._empty_until: dict[str, float] = {}

    async def start(self, settings: LimitsSettings) -> None:
        self.configure(settings)
        bound = self._timeout if self._start_timeout is None else max(self._timeout, self._start_timeout)
        # The connection opened here serves requests later; every request's call is bounded by
        # redis_timeout_ms with a timer of its own.
        self._client().connect_timeout = bound
        try:
            async with asyncio.timeout(bound):
                await self._load_scripts()
        except _FAILURES as exc:
            # Serve anyway under the failure policy; the breaker's probe loads the scripts later.
            self._health.start_failed(exc)
        else:
            self._health.note_problem(None)

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnecting
        await self._health.close()
        self._batcher.close()
        transport, self._transport = self._transport, None
        if transport is not None and self._owns_transport:
            await transport.aclose()

    # -- state -----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return not self._breaker.is_open

    @property
    def state(self) -> str:
        return self._breaker.state

    @property
    def problem(self) -> str | None:
        return self._health.problem

    @property
    def description(self) -> str:
        return (
            f"shared limits in Redis at {self._where} (keys {self.keys.base}:*), "
            "exact across workers and replicas"
        )

    @property
    def settings(self) -> LimitsSettings:
        return self._settings

    # -- the request path ------------------------------------------------------------------

    async def admit(self, checks: Sequence[Check], tokens: int = 0) -> Decision:
        if not checks:
            return ALLOW
        if type(checks) is not tuple:
            checks = tuple(checks)
        plan = self._encoder.plans.get(checks)
        if plan is None:
            plan = self._encoder.plan(checks)
        smallest = plan.smallest_token_check
        if smallest is not None and tokens > smallest.burst:
            # No wait can make it fit: refused here, as the script would, without a round trip.
            return Decision(allowed=False, refused=smallest, hopeless=True)
        if self._breaker.is_open:
            return self._degraded()
        if self._empty_until:
            known = self._known_empty(plan)
            if known is not None:
                return known
        lease_id = os.urandom(16).hex() if plan.semaphores else ""
        sent_at = self._clock()
        cost = tokens if plan.token_checks else 0
        try:
            reply = await self._batcher.admit(plan, lease_id, cost)
        except _FAILURES as exc:
            self._health.failed("admit", exc)
            return self._degraded()
        except asyncio.CancelledError:
            # The request went away mid-admission; Redis may have granted the lease all the same.
            # Give it back now rather than leave the permits to the lease TTL.
            if lease_id:
                self.release_soon(Lease(lease_id, plan.semaphores, self._settings.lease_ttl_ms))
            raise
        self._health.succeeded()
        if reply == 0:
            if not plan.semaphores:
                return ALLOW
            self._book.hold(lease_id, plan.semaphores)
            return Decision(allowed=True, lease=Lease(lease_id, plan.semaphores, self._settings.lease_ttl_ms))
        if reply[0] == 0:
            if plan.semaphores:
                self._book.hold(lease_id, plan.semaphores)
            return self._admitted(plan, reply, lease_id, cost)
        return self._refused(plan, reply, sent_at)

    def _admitted(self, plan: AdmitPlan, reply: Any, lease_id: str, cost: int) -> Decision:
        """An admission of a request with buckets: its lease, reservation and headroom."""
        lease = Lease(lease_id, plan.semaphores, self._settings.lease_ttl_ms) if plan.semaphores else None
        return Decision(
            allowed=True,
            lease=lease,
            reservation=Reservation(plan.token_checks, cost) if plan.token_checks else None,
            requests=headroom(plan, int(reply[1]), int(reply[2]), int(reply[3])),
            tokens=headroom(plan, int(reply[4]), int(reply[5]), int(reply[6])),
        )

    def _refused(self, plan: AdmitPlan, reply: Any, sent_at: float) -> Decision:
        index = int(reply[0]) - 1
        refusal = plan.refusals[index]
        if refusal is not None:
            return refusal
        if int(reply[1]) == -2:
            return Decision(allowed=False, refused=plan.checks[index], hopeless=True)
        wait = max(int(reply[1]), 1) / 1000
        # A bucket only refills at its rate, so it is certainly empty until `wait` after Redis
        # decided. Redis decided after `sent_at`, so refusing locally until sent_at + wait never
        # refuses a request a token was there for, and saves Redis the calls of a client that
        # keeps knocking.
        if plan.proves_empty[index]:
            # Kept one second at most: an operator who deletes a bucket, or a Redis that lost its
            # data without our connection noticing, is believed again within a second.
            self._empty_until[plan.checks[index].limiter_id] = sent_at + min(wait, _EMPTY_MEMORY_S)
        return Decision(allowed=False, refused=plan.checks[index], retry_after=wait)

    def _connection_changed(self) -> None:
        # A lost or new connection may mean a restarted or failed-over Redis, whose buckets start full.
        self._empty_until = {}
        transport = self._transport
        if transport is None or transport.connected or self._closing or self._breaker.is_open:
            return
        # Lost while the circuit is closed: reconnect now, not at the next request, so the held
        # leases are back (recovery.py) before any other worker fills their places.
        if self._reconnecting is None or self._reconnecting.done():
            with contextlib.suppress(RuntimeError):  # no running loop: shutting down
                self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        # Quietly: a request that comes meanwhile reconnects by itself and decides the policy;
        # this loop only makes sure the new connection (and its greeting) happens soon.
        while not self._closing and not self._breaker.is_open:
            transport = self._transport
            if transport is None or transport.connected:
                return
            try:
                async with asyncio.timeout(self._timeout):
                    await transport.execute_command("PING")
                return
            except _FAILURES as exc:
                if misconfiguration(exc) is not None:
                    # Not an outage to wait out quietly: report it, and serve by the policy.
                    self._health.failed("reconnect", exc)
                    return
            await asyncio.sleep(PROBE_BASE_S * (1 + random.random()))

    def _known_empty(self, plan: AdmitPlan) -> Decision | None:
        now = self._clock()
        empty_until = self._empty_until
        for check in plan.checks:
            if type(check) is not RateCheck:
                continue  # only request buckets are remembered empty
            until = empty_until.get(check.limiter_id)
            if until is None:
                continue
            if until > now:
                return Decision(allowed=False, refused=check, retry_after=until - now)
            del empty_until[check.limiter_id]
        return None

    async def release(self, lease: Lease) -> None:
        if not lease.limiter_ids:
            return
        self._book.drop(lease.lease_id, lease.limiter_ids)
        head = self._encoder.lease_head(self._encoder.release, lease.limiter_ids)
        if not await self._lease_call(
            "release", lease, (*head, *([lease.lease_id] * len(lease.limiter_ids)))
        ):
            self._batcher.owe_lease(lease.limiter_ids, lease.lease_id)

    def release_soon(self, lease: Lease) -> None:
        if not lease.limiter_ids or self._transport is None:
            return
        self._book.drop(lease.lease_id, lease.limiter_ids)
        if self._breaker.is_open:
            # Kept, and sent when Redis answers again: its permit must not wait for the lease ttl.
            self._batcher.owe_lease(lease.limiter_ids, lease.lease_id)
            return
        # Queued for this iteration's write, with every other release and admission of it. The
        # caller yields once before the end of its response (see releases_pending), which lets
        # the write go first.
        self._batcher.release(lease.limiter_ids, lease.lease_id)

    def settle_soon(self, reservation: Reservation, used: int) -> None:
        delta = reservation.tokens - used
        if not delta or self._breaker.is_open or self._transport is None:
            return
        # Queued with this iteration's releases: one release.lua call carries both.
        settlement = self._encoder.settlement
        for check in reservation.checks:
            self._batcher.settle(settlement(check, delta))

    @property
    def releases_pending(self) -> bool:
        return self._batcher.releases_pending

    async def renew(self, lease: Lease) -> None:
        head = self._encoder.lease_head(self._encoder.renew, lease.limiter_ids)
        await self._lease_call("renew", lease, (*head, lease.lease_id, num(lease.ttl_ms)))

    # -- internals -------------------------------------------------------------------------

    @property
    def releases_owed(self) -> int:
        """Releases kept because Redis could not take them yet."""
        return self._batcher.owed

    def _released(self, exc: BaseException | None) -> None:
        if exc is None:
            self._health.succeeded()
        elif isinstance(exc, _FAILURES):
            self._health.failed("release", exc)

    def _state_changed(self, state: str) -> None:
        if state == "closed":
            self._batcher.resume()
        self._on_state_change(state)

    async def _lease_call(self, what: str, lease: Lease, args: tuple[Any, ...]) -> bool:
        # Never raises: a permit that is not given back or renewed comes back when its lease expires.
        # False when the call did not go through.
        if not lease.limiter_ids or self._breaker.is_open or self._transport is None:
            return False
        try:
            async with asyncio.timeout(self._timeout):
                held = await self._call(args)
        except _FAILURES as exc:
            self._health.failed(what, exc)
            return False
        except Exception:
            log.exception("unexpected error in limiter %s", what)
            return False
        self._health.succeeded()
        if held != len(lease.limiter_ids):
            log.debug(
                "%s of lease %s: %s of %d permits were still held",
                what,
                lease.lease_id,
                held,
                len(lease.limiter_ids),
            )
        return True

    def _client(self) -> Transport:
        transport = self._transport
        if transport is None:
            raise ConnectionError("RedisLimiter is closed")
        return transport

    async def _call(self, args: tuple[Any, ...]) -> Any:
        try:
            return await self._client().execute_command(*args)
        except NOT_RUN as exc:
            return await self._resend(exc, pack_command(args))

    async def _resend(self, exc: BaseException, packed: bytes) -> Any:
        """Send a call again after a reply saying it did not run; each kind of reply is followed
        once, then the last one is raised (the caller's failure path, then the policy).

        * NOSCRIPT (restart, failover, SCRIPT FLUSH), MOVED or READONLY (the keys are on another
          node now): the scripts are loaded on the owner, found again, and the call repeated.
        * ASK (the gateway's slot is being migrated): ASKING and the call go to the importing
          node; the slot map stays as it is (the migration may still be rolled back).
        * TRYAGAIN (the call's keys are split between the two nodes for now): after a short
          pause the call is repeated where it went last.
        """
        transport = self._client()
        followed: set[type[BaseException]] = set()
        asked: tuple[str, int] | None = None  # where an ASK sent the call, else the owner
        while True:
            kind = type(exc)
            if kind in followed or not isinstance(exc, NOT_RUN):
                raise exc
            followed.add(kind)
            if isinstance(exc, RedirectError):
                transport.redirected(exc)
                asked = None
                await self._load_scripts()
            elif isinstance(exc, AskRedirect):
                asked = exc.address
                if asked is None:
                    raise exc
            elif isinstance(exc, TryAgainError):
                await asyncio.sleep(TRYAGAIN_PAUSE_S)
            elif asked is not None:  # NOSCRIPT from the importing node
                for script in self._encoder.scripts:
                    await transport.asking(asked, pack_command(("SCRIPT", "LOAD", script.body)))
            else:
                await self._load_scripts()
            try:
                if asked is None:
                    return await transport.execute_packed(packed)
                return await transport.asking(asked, packed)
            except NOT_RUN as again:
                exc = again

    async def _load_scripts(self) -> None:
        await load_scripts(self._client(), self._encoder.scripts)

    async def _probe(self) -> None:
        transport = self._client()
        if transport.stuck_for() > STUCK_S:
            # Nothing has come back for so long that the peer is gone; a stall would have ended.
            transport.abort()
        try:
            async with asyncio.timeout(self._timeout):
                await transport.check_owner()
                await transport.execute_command("PING")
                await self._load_scripts()
        except _FAILURES as exc:
            self._health.note_problem(exc)
            raise
        self._health.succeeded()

    def _degraded(self) -> Decision:
        if self._fallback is None:
            raise LimiterUnavailable(
                f"Redis limiter at {self._where} is unavailable and limits.on_redis_error is deny"
            )
        return self._fallback
