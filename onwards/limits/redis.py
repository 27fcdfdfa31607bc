"""Cluster-wide limits: token buckets and leased semaphores in Redis, one script call per request.

The scripts in ``lua/`` (shipped as the package ``onwards.lua``) are the specification; this module
encodes the arguments once per distinct set of checks, calls the scripts by EVALSHA, and keeps a
dead Redis from slowing requests down: every call is bounded by one ``redis_timeout_ms``, and a
circuit breaker answers with the failure policy at once until a background probe finds Redis again.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from onwards.config.model import Check, ConcurrencyCheck, LimitsSettings, RateCheck
from onwards.limits.base import ALLOW, Decision, Lease, LimiterUnavailable
from onwards.limits.breaker import CircuitBreaker
from onwards.limits.keys import DEFAULT_PREFIX, KeySpace, validate_checks, validate_settings
from onwards.limits.resp import PipelinedRedis

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # older redis-py has neither the feature nor its side effect
    _POOL_OPTIONS: dict[str, Any] = {}
else:
    # While "maintenance notifications" are on (redis-py 8 turns them on by default with RESP3),
    # the pool skips its check for connections the server has closed. After a Redis restart or
    # failover every pooled connection is such a one, and each first call on it failed and
    # opened the circuit. Onwards does not use the notifications (a Redis Enterprise feature).
    _POOL_OPTIONS = {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}

log = logging.getLogger("onwards.limits")

# Errors that mean "Redis did not answer usefully". Anything else is a bug and propagates.
_FAILURES = (RedisError, OSError, TimeoutError)
# Distinct check sets are key x target x provider combinations; bound the memo all the same.
_MAX_PLANS = 4096
# A damaged key (wrong type) is reported at most this often, not once per request.
_KEY_ERROR_LOG_INTERVAL_S = 60.0
# How long a refusal is remembered locally (see admit).
_EMPTY_MEMORY_S = 1.0
# Redis connections per worker: an admission holds one for a round trip, so a few carry thousands
# of requests per second.
_POOL_SIZE = 16
# What a gateway worker allows itself to load the scripts at start (see RedisLimiter.start).
WORKER_START_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    body: bytes
    sha: str


def load_script(name: str) -> Script:
    body = importlib.resources.files("onwards.lua").joinpath(f"{name}.lua").read_bytes()
    return Script(name, body, hashlib.sha1(body).hexdigest())


@dataclass(frozen=True, slots=True)
class _AdmitPlan:
    """One distinct tuple of checks, encoded once: its part of an admit.lua call."""

    checks: tuple[Check, ...]
    keys: tuple[bytes, ...]
    values: tuple[bytes, ...]  # kinds, then two values per check (after the lease id)
    # The same in RESP, so a batch is a join of ready-made bytes.
    packed_keys: bytes
    packed_values: bytes
    semaphores: tuple[str, ...]  # limiter ids of the concurrency checks
    # The ready-made refusal for each concurrency check (None at rate checks).
    refusals: tuple[Decision | None, ...]
    # Per check: a refusal proves its bucket empty (a rate check listed once; a bucket listed
    # twice is refused with a token still in it).
    proves_empty: tuple[bool, ...]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _num(value: float) -> bytes:
    # repr() round-trips a float exactly, and Lua's tonumber reads it back the same.
    return repr(value).encode() if isinstance(value, float) else str(value).encode()


def redact_url(url: str) -> str:
    """The URL without credentials, fit for logs and /ready."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def _noop() -> None:
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
        client: aioredis.Redis | None = None,
        on_state_change: Callable[[str], None] | None = None,
        on_error: Callable[[], None] | None = None,
        max_connections: int | None = None,
        cooldown_s: float = 1.0,
        max_cooldown_s: float = 10.0,
        start_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("RedisLimiter needs exactly one of a Redis url or a client")
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"Redis url must start with redis://, rediss:// or unix://, got {redact_url(url)!r}"
            )
        self._url = url
        self._client: aioredis.Redis | PipelinedRedis | None = client
        self._owns_client = client is None
        self._pool_size = max_connections or _POOL_SIZE
        self._clock = clock  # for the local "bucket known empty" memory only; Redis keeps the time
        # Without an explicit pool size the limiter uses its own pipelined client (resp.py);
        # max_connections asks for redis-py's blocking pool instead.
        self._pool_size_given = max_connections is not None
        self._pipelined = False
        self._background: set[asyncio.Task[None]] = set()
        self._admit_queue: list[tuple[_AdmitPlan, str, asyncio.Future[Any]]] = []
        self._release_queue: list[tuple[bytes, bytes]] = []  # (packed semaphore key, lease id)
        self._flush_scheduled = False
        self._semaphore_keys: dict[str, bytes] = {}
        # The bound of the script load in start(); None means redis_timeout_ms. Starting is not a
        # request: a process's first connection costs far more than later ones, and on a busy host
        # (every worker starting at once) a request-sized bound failed while Redis was fine,
        # leaving a fresh worker to serve under the failure policy until the breaker's probe.
        self._start_timeout = start_timeout_s
        self.keys = KeySpace(prefix, hash_tag or "")
        self._on_error = on_error or _noop
        self._admit = load_script("admit")
        self._release = load_script("release")
        # The fixed start of every batched call: EVALSHA and the script's sha, in RESP.
        self._packed_admit_head = _bulk(b"EVALSHA") + _bulk(self._admit.sha.encode())
        self._packed_release_head = _bulk(b"EVALSHA") + _bulk(self._release.sha.encode())
        self._renew = load_script("renew")
        self._breaker = CircuitBreaker(
            self._probe,
            name=f"Redis limiter ({self._where()})",
            base_delay=cooldown_s,
            max_delay=max_cooldown_s,
            on_state_change=on_state_change or _noop_state,
            on_probe_error=self._count_error,
        )
        self._plans: dict[tuple[Check, ...], _AdmitPlan] = {}
        self._lease_heads: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self._last_key_error = float("-inf")
        self.configure(settings or LimitsSettings())

    # -- lifecycle -------------------------------------------------------------------------

    def configure(self, settings: LimitsSettings) -> None:
        validate_settings(settings)
        self._settings = settings
        self._timeout = settings.redis_timeout_ms / 1000
        self._ttl = _num(settings.lease_ttl_ms)
        if settings.on_redis_error == "allow":
            self._fallback: Decision | None = Decision(allowed=True, degraded=True)
        else:
            self._fallback = None
        # Plans carry the lease ttl; rebuild them lazily under the new settings.
        self._plans = {}
        # A reload may raise a rate: what was known empty under the old one is not any more.
        self._empty_until: dict[str, float] = {}
        self._socket_timeouts(self._timeout)

    def _socket_timeouts(self, seconds: float) -> None:
        if isinstance(self._client, aioredis.Redis) and self._owns_client:
            # New connections pick these up; every call is bounded by asyncio.timeout anyway.
            kwargs = self._client.connection_pool.connection_kwargs
            kwargs["socket_timeout"] = seconds
            kwargs["socket_connect_timeout"] = seconds

    async def start(self, settings: LimitsSettings) -> None:
        self.configure(settings)
        if self._client is None:
            assert self._url is not None
            # A blocking pool of a few connections: a burst of admissions waits its turn for a
            # connection (a round trip each) inside its own timeout. redis-py's default pool opens
            # one connection per concurrent call, which on a burst costs more than the timeout, and
            # raises past 100 of them; either failure opened the circuit, turning off the limits
            # exactly when a burst arrived.
            if self._pool_size_given:
                pool = aioredis.BlockingConnectionPool.from_url(
                    self._url,
                    max_connections=self._pool_size,
                    timeout=None,  # the call's asyncio.timeout bounds the wait
                    # redis-py retries failed commands by default; a retry would double the wait of a
                    # request when Redis is dead. The breaker is the retry policy here.
                    retry=Retry(NoBackoff(), 0),
                    **_POOL_OPTIONS,
                )
                self._client = aioredis.Redis(connection_pool=pool)
            else:
                # The default: one pipelined connection per worker (see resp.py for why).
                start_bound = self._timeout if self._start_timeout is None else self._start_timeout
                self._client = PipelinedRedis(
                    self._url, connect_timeout=max(self._timeout, start_bound), on_change=self._forget_empty
                )
        self._pipelined = isinstance(self._client, PipelinedRedis)
        bound = self._timeout if self._start_timeout is None else max(self._timeout, self._start_timeout)
        # The connection opened here (with the start bound on its socket too) serves requests
        # later; every request's call is bounded by redis_timeout_ms with asyncio.timeout.
        self._socket_timeouts(bound)
        try:
            async with asyncio.timeout(bound):
                await self._load_scripts()
        except _FAILURES as exc:
            # Serve anyway under the failure policy; the breaker's probe loads the scripts later.
            self._count_error()
            self._breaker.trip(exc)
        finally:
            self._socket_timeouts(self._timeout)

    async def close(self) -> None:
        await self._breaker.close()
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()
            if isinstance(client, aioredis.Redis):
                await client.connection_pool.disconnect()

    # -- state -----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return not self._breaker.is_open

    @property
    def state(self) -> str:
        return self._breaker.state

    @property
    def description(self) -> str:
        return (
            f"shared limits in Redis at {self._where()} (keys {self.keys.base}:*), "
            "exact across workers and replicas"
        )

    @property
    def settings(self) -> LimitsSettings:
        return self._settings

    # -- the request path ------------------------------------------------------------------

    async def admit(self, checks: Sequence[Check]) -> Decision:
        if not checks:
            return ALLOW
        if type(checks) is not tuple:
            checks = tuple(checks)
        plan = self._plans.get(checks)
        if plan is None:
            plan = self._plan(checks)
        if self._breaker.is_open:
            return self._degraded()
        if self._empty_until:
            known = self._known_empty(plan)
            if known is not None:
                return known
        lease_id = os.urandom(16).hex() if plan.semaphores else ""
        sent_at = self._clock()
        try:
            if self._pipelined:
                # Bounded by redis_timeout_ms all the same: one timer per batch (see _flush), not
                # one per request.
                reply = await self._queue_admit(plan, lease_id)
            else:
                async with asyncio.timeout(self._timeout):
                    args = ("EVALSHA", self._admit.sha, len(plan.keys), *plan.keys, 1, self._ttl, lease_id)
                    reply = (await self._call((*args, *plan.values)))[0]
        except _FAILURES as exc:
            self._failed("admit", exc)
            return self._degraded()
        except asyncio.CancelledError:
            # The request went away mid-admission; Redis may have granted the lease all the same.
            # Give it back now rather than leave the permits to the lease TTL.
            if lease_id:
                self.release_soon(Lease(lease_id, plan.semaphores, self._settings.lease_ttl_ms))
            raise
        self._breaker.record_success()
        if reply == 0:
            if not plan.semaphores:
                return ALLOW
            return Decision(allowed=True, lease=Lease(lease_id, plan.semaphores, self._settings.lease_ttl_ms))
        index = int(reply[0]) - 1
        refusal = plan.refusals[index]
        if refusal is not None:
            return refusal
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

    def _forget_empty(self) -> None:
        # A lost or new connection may mean a restarted or failed-over Redis, whose buckets start full.
        self._empty_until = {}

    def _known_empty(self, plan: _AdmitPlan) -> Decision | None:
        now = self._clock()
        empty_until = self._empty_until
        for check in plan.checks:
            until = empty_until.get(check.limiter_id)
            if until is None:
                continue
            if until > now:
                return Decision(allowed=False, refused=check, retry_after=until - now)
            del empty_until[check.limiter_id]
        return None

    async def release(self, lease: Lease) -> None:
        head = self._lease_head(self._release, lease.limiter_ids)
        await self._lease_call("release", lease, (*head, *([lease.lease_id] * len(lease.limiter_ids))))

    def release_soon(self, lease: Lease) -> None:
        if not lease.limiter_ids or self._breaker.is_open or self._client is None:
            return
        if not self._pipelined:
            self._background_release(lease)
            return
        # Queued for this iteration's flush, with every other release and admission of it: under
        # load that is one write and one script call for many requests instead of one each. The
        # caller yields once before the end of its response (see releases_pending), which lets
        # the flush run first.
        lease_id = lease.lease_id.encode()
        queue = self._release_queue
        for limiter_id in lease.limiter_ids:
            queue.append((self._semaphore_key(limiter_id), lease_id))
        self._schedule_flush()

    @property
    def releases_pending(self) -> bool:
        return bool(self._release_queue)

    async def renew(self, lease: Lease) -> None:
        head = self._lease_head(self._renew, lease.limiter_ids)
        await self._lease_call("renew", lease, (*head, lease.lease_id, _num(lease.ttl_ms)))

    # -- batching on the pipelined connection ----------------------------------------------
    #
    # The admissions of one event-loop iteration go out together as one admit.lua call, and its
    # releases as one release.lua call, both in one write. Under load this turns thousands of
    # script calls a second into a few hundred, on both sides of the connection.

    def _queue_admit(self, plan: _AdmitPlan, lease_id: str) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self._admit_queue.append((plan, lease_id, future))
        self._schedule_flush()
        return future

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        admits, self._admit_queue = self._admit_queue, []
        releases, self._release_queue = self._release_queue, []
        client = self._client
        if not isinstance(client, PipelinedRedis):  # closed meanwhile
            for _, _, future in admits:
                if not future.done():
                    future.set_exception(ConnectionError("RedisLimiter is closed"))
            return
        # Releases first: an admission in the same batch may need the permit one gives back.
        packed: list[bytes] = []
        callbacks: list[Callable[[asyncio.Future[Any]], None]] = []
        if releases:
            packed.append(self._pack_releases(releases))
            callbacks.append(lambda done: self._released(done, releases))
        if admits:
            packed.append(self._pack_admits(admits))
            # Every admission of the batch waits at most redis_timeout_ms from now.
            timer = asyncio.get_running_loop().call_later(self._timeout, self._admits_timed_out, admits)
            callbacks.append(lambda done: self._admitted(done, admits, timer))
        if not packed:
            return
        futures = client.send_now(packed)
        if futures is None:
            # No open connection: a task opens one (single flight) and sends.
            futures = [asyncio.ensure_future(self._call_packed(one)) for one in packed]
        for future, callback in zip(futures, callbacks, strict=True):
            future.add_done_callback(callback)

    def _pack_releases(self, releases: list[tuple[bytes, bytes]]) -> bytes:
        n = len(releases)
        return b"".join(
            (
                b"*%d\r\n" % (3 + 2 * n),
                self._packed_release_head,
                _bulk(b"%d" % n),
                *(key for key, _ in releases),
                *(_bulk(lease) for _, lease in releases),
            )
        )

    def _pack_admits(self, admits: list[tuple[_AdmitPlan, str, asyncio.Future[Any]]]) -> bytes:
        nkeys = 0
        items = 5  # EVALSHA, sha, numkeys, R, ttl
        for plan, _, _ in admits:
            nkeys += len(plan.keys)
            items += len(plan.keys) + 1 + len(plan.values)
        return b"".join(
            (
                b"*%d\r\n" % items,
                self._packed_admit_head,
                _bulk(b"%d" % nkeys),
                *(plan.packed_keys for plan, _, _ in admits),
                _bulk(b"%d" % len(admits)),
                _bulk(self._ttl),
                *(_bulk(lease.encode()) + plan.packed_values for plan, lease, _ in admits),
            )
        )

    @staticmethod
    def _admits_timed_out(admits: list[tuple[_AdmitPlan, str, asyncio.Future[Any]]]) -> None:
        for _, _, future in admits:
            if not future.done():
                future.set_exception(TimeoutError("Redis did not answer within redis_timeout_ms"))

    def _admitted(
        self,
        done: asyncio.Future[Any],
        admits: list[tuple[_AdmitPlan, str, asyncio.Future[Any]]],
        timer: asyncio.TimerHandle,
    ) -> None:
        exc = done.exception() if not done.cancelled() else ConnectionError("admission batch cancelled")
        if isinstance(exc, NoScriptError):
            # Redis restarted or was flushed: reload the scripts and send the same batch again,
            # still within the batch's timeout.
            retry = asyncio.ensure_future(self._resend(self._pack_admits(admits)))
            retry.add_done_callback(lambda again: self._admitted(again, admits, timer))
            return
        timer.cancel()
        ttl = self._settings.lease_ttl_ms
        for i, (plan, lease_id, future) in enumerate(admits):
            if future.done():
                # Its request timed out or went away. Had it been admitted, its permits go back.
                if exc is None and lease_id and done.result()[i] == 0:
                    self.release_soon(Lease(lease_id, plan.semaphores, ttl))
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(done.result()[i])

    def _released(self, done: asyncio.Future[Any], releases: list[tuple[bytes, bytes]]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if exc is None:
            self._breaker.record_success()
        elif isinstance(exc, NoScriptError):
            retry = asyncio.ensure_future(self._resend(self._pack_releases(releases)))
            retry.add_done_callback(lambda again: self._released(again, releases))
        elif isinstance(exc, _FAILURES):
            self._failed("release", exc)

    async def _resend(self, packed: bytes) -> Any:
        await self._load_scripts()
        client = self._client
        assert isinstance(client, PipelinedRedis)
        return await client.execute_packed(packed)

    def _semaphore_key(self, limiter_id: str) -> bytes:
        packed = self._semaphore_keys.get(limiter_id)
        if packed is None:
            packed = _bulk(self.keys.semaphore(limiter_id).encode())
            if len(self._semaphore_keys) >= _MAX_PLANS:
                self._semaphore_keys.pop(next(iter(self._semaphore_keys)))
            self._semaphore_keys[limiter_id] = packed
        return packed

    # -- internals -------------------------------------------------------------------------

    def _plan(self, checks: tuple[Check, ...]) -> _AdmitPlan:
        validate_checks(checks)
        keys: list[bytes] = []
        params: list[bytes] = []
        kinds = bytearray()
        semaphores: list[str] = []
        refusals: list[Decision | None] = []
        for check in checks:
            keys.append(self.keys.key_for(check).encode())
            if isinstance(check, RateCheck):
                kinds += b"r"
                params += (_num(float(check.rate)), _num(check.burst))
                refusals.append(None)
            else:
                assert isinstance(check, ConcurrencyCheck)
                kinds += b"c"
                params += (_num(check.limit), b"")
                semaphores.append(check.limiter_id)
                refusals.append(Decision(allowed=False, refused=check))
        values = (bytes(kinds), *params)
        plan = _AdmitPlan(
            checks=checks,
            keys=tuple(keys),
            values=values,
            packed_keys=b"".join(_bulk(k) for k in keys),
            packed_values=b"".join(_bulk(v) for v in values),
            semaphores=tuple(semaphores),
            refusals=tuple(refusals),
            proves_empty=tuple(
                isinstance(c, RateCheck) and sum(o.limiter_id == c.limiter_id for o in checks) == 1
                for c in checks
            ),
        )
        if len(self._plans) >= _MAX_PLANS:
            self._plans.pop(next(iter(self._plans)))
        self._plans[checks] = plan
        return plan

    def _lease_head(self, script: Script, limiter_ids: tuple[str, ...]) -> tuple[Any, ...]:
        memo = (script.name, *limiter_ids)
        head = self._lease_heads.get(memo)
        if head is None:
            keys = [self.keys.semaphore(limiter_id).encode() for limiter_id in limiter_ids]
            head = ("EVALSHA", script.sha, len(keys), *keys)
            if len(self._lease_heads) >= _MAX_PLANS:
                self._lease_heads.pop(next(iter(self._lease_heads)))
            self._lease_heads[memo] = head
        return head

    async def _lease_call(self, what: str, lease: Lease, args: tuple[Any, ...]) -> None:
        # Never raises: a permit that is not given back or renewed comes back when its lease expires.
        if not lease.limiter_ids or self._breaker.is_open or self._client is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                held = await self._call(args)
        except _FAILURES as exc:
            self._failed(what, exc)
            return
        except Exception:
            log.exception("unexpected error in limiter %s", what)
            return
        self._breaker.record_success()
        if held != len(lease.limiter_ids):
            log.debug(
                "%s of lease %s: %s of %d permits were still held",
                what,
                lease.lease_id,
                held,
                len(lease.limiter_ids),
            )

    async def _call(self, args: tuple[Any, ...]) -> Any:
        client = self._client
        if client is None:
            raise ConnectionError("RedisLimiter used before start()")
        try:
            return await client.execute_command(*args)
        except NoScriptError:
            # Redis restarted, failed over or was flushed: the script cache is empty.
            await self._load_scripts()
            return await client.execute_command(*args)

    async def _call_packed(self, packed: bytes) -> Any:
        client = self._client
        assert isinstance(client, PipelinedRedis)
        return await client.execute_packed(packed)

    def _background_release(self, lease: Lease) -> None:
        task = asyncio.get_running_loop().create_task(self.release(lease))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _load_scripts(self) -> None:
        client = self._client
        if client is None:
            raise ConnectionError("RedisLimiter used before start()")
        for script in (self._admit, self._release, self._renew):
            sha = await client.execute_command("SCRIPT", "LOAD", script.body)
            if isinstance(sha, bytes):
                sha = sha.decode()
            if sha != script.sha:
                raise ResponseError(f"SCRIPT LOAD of {script.name}.lua returned {sha}, expected {script.sha}")

    async def _probe(self) -> None:
        async with asyncio.timeout(self._timeout):
            if self._client is None:
                raise ConnectionError("RedisLimiter is closed")
            await self._client.execute_command("PING")
            await self._load_scripts()

    def _failed(self, what: str, exc: BaseException) -> None:
        self._count_error()
        if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
            # Redis answered; one limiter's key holds something else. Opening the circuit would
            # put every other limit under the failure policy because of one damaged key.
            now = time.monotonic()
            if now - self._last_key_error >= _KEY_ERROR_LOG_INTERVAL_S:
                self._last_key_error = now
                log.warning("limiter %s failed on a damaged key (%s); failure policy applied", what, exc)
            return
        log.debug("limiter %s failed: %r", what, exc)
        if isinstance(self._client, PipelinedRedis) and isinstance(
            exc, TimeoutError | OSError | ConnectionError
        ):
            # A connection that stopped answering would hold every later call behind it.
            self._client.abort()
        self._breaker.trip(exc)

    def _degraded(self) -> Decision:
        if self._fallback is None:
            raise LimiterUnavailable(
                f"Redis limiter at {self._where()} is unavailable and limits.on_redis_error is deny"
            )
        return self._fallback

    def _count_error(self) -> None:
        try:
            self._on_error()
        except Exception:
            log.exception("on_error hook failed")

    def _where(self) -> str:
        if self._url is not None:
            return redact_url(self._url)
        return "injected client"
