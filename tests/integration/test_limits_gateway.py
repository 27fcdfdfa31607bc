"""Cluster-wide limits through real gateway processes: Granian workers, Redis, mock upstreams.

Most tests share two gateway instances (two workers each) started once for the module on one
Redis prefix; every test uses its own aliases and key definitions there, so their limits never
meet. Tests that kill things (a worker, Redis) get their own gateway, and the ones that stop or
restart Redis get a private redis-server on a free port, so the shared Redis is never disturbed.

Timing assertions are upper bounds with slack ("admitted within TTL + 2 s"), never speed claims.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.mock_upstream import MockUpstream
from tests.support.processes import (
    STARTUP_TIMEOUT,
    GatewayProcess,
    redis_available,
    wait_until,
)
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.redis]

TINY_RATE = 0.001  # one token per 1000 s: no bucket refills during a test run
WORKERS = 2

ALICE = "sk-alice-1111"
BASIC = "sk-basic-2222"
PREMIUM = "sk-premium-3333"
POOL_USER = "sk-pool-4444"
ALL_TOKENS = (ALICE, BASIC, PREMIUM, POOL_USER)

_READY_LINE = "onwards.app: worker ready"
_ACCESS_LINE = re.compile(r"\[(\d+)\] onwards\.access: .*")


# ---------------------------------------------------------------------------------------------
# HTTP helpers: a fresh TCP connection per request, so requests spread over a gateway's workers


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:160]!r})"


def _payload(model: str, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def _headers(token: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "connection": "close", **(extra or {})}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


def call(
    gw: GatewayProcess,
    model: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    stream: bool = False,
    timeout: float = 10.0,
) -> Reply:
    started = time.monotonic()
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", _payload(model, stream), _headers(token, headers))
        response = conn.getresponse()
        body = response.read()
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            body,
            time.monotonic() - started,
        )
    finally:
        conn.close()


def try_call(gw: GatewayProcess, model: str, **kwargs: Any) -> Reply | None:
    """Like call, but None when the gateway could not be reached (a worker being respawned)."""
    try:
        return call(gw, model, **kwargs)
    except (OSError, http.client.HTTPException):
        return None


def get(gw: GatewayProcess, path: str) -> Reply:
    started = time.monotonic()
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=5)
    try:
        conn.request("GET", path, headers={"connection": "close"})
        response = conn.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers, body, time.monotonic() - started)
    finally:
        conn.close()


def all_at_once(jobs: list[Callable[[], Reply]]) -> list[Reply]:
    """Run every job in its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], Reply]) -> Reply:
        barrier.wait(timeout=10)
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def statuses(replies: list[Reply]) -> list[int]:
    return [r.status for r in replies]


class OpenStream:
    """A streaming request whose response is read step by step on our own connection."""

    def __init__(self, gw: GatewayProcess, model: str, headers: dict[str, str], token: str | None = None):
        self.conn = http.client.HTTPConnection(gw.host, gw.port, timeout=15)
        self.conn.connect()
        # Kept here: http.client hands the socket over to the response and forgets it.
        self.sock = self.conn.sock
        self.client_port: int = self.sock.getsockname()[1]
        self.conn.request("POST", "/v1/chat/completions", _payload(model, True), _headers(token, headers))

    def response(self) -> http.client.HTTPResponse:
        return self.conn.getresponse()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # the gateway sees the disconnect at once
        self.sock.close()
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# Process helpers


def wait_workers_ready(gw: GatewayProcess, count: int, timeout: float = STARTUP_TIMEOUT) -> None:
    """Until `count` workers have logged that they are ready (/health answers after the first)."""
    wait_until(
        lambda: gw.output().count(_READY_LINE) >= count,
        timeout=timeout,
        message=f"fewer than {count} workers became ready\n{gw.describe()}",
    )


def access_pids(gw: GatewayProcess, needle: str) -> set[int]:
    """Worker pids of the access-log lines that contain `needle`."""
    return {int(m.group(1)) for m in _ACCESS_LINE.finditer(gw.output()) if needle in m.group(0)}


def wait_all_workers_serve(gw: GatewayProcess, model: str) -> None:
    """Until every worker has served `model`: a worker logs "ready" a moment before it accepts."""

    def every_worker_served() -> bool:
        all_at_once([lambda: call(gw, model) for _ in range(4)])
        return access_pids(gw, f"target={model} ") >= set(gw.worker_pids())

    wait_until(every_worker_served, timeout=STARTUP_TIMEOUT, interval=0.1, message=gw.describe())


def start_gateways(*gateways: GatewayProcess, warm_model: str | None = None) -> None:
    """Launch several gateways at once (starting workers costs seconds) and wait for all workers.

    With `warm_model` (an alias without limits), wait until every worker has served it.
    """
    for gw in gateways:
        gw.launch()
    try:
        for gw in gateways:
            gw.wait_ready(gw.ready, STARTUP_TIMEOUT)
            wait_workers_ready(gw, gw.workers)
            if warm_model is not None:
                wait_all_workers_serve(gw, warm_model)
    except BaseException:
        for gw in gateways:
            gw.stop()
        raise


def stop_gateway(gw: GatewayProcess) -> None:
    gw.stop()
    print(f"--- {gw.describe()}")
    gw.close()


def socket_owner(gw: GatewayProcess, client_port: int) -> int | None:
    """The worker holding the gateway side of the loopback connection from `client_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local_port = int(parts[1].split(":")[1], 16)
        remote_port = int(parts[2].split(":")[1], 16)
        if local_port == gw.port and remote_port == client_port and parts[3] == "01":
            inode = parts[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in gw.worker_pids():
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


def drop_keys(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)


def semaphore_key(prefix: str, limiter_id: str) -> str:
    return f"{prefix}:{{{prefix}}}:cc:{limiter_id}"


def bucket_key(prefix: str, limiter_id: str) -> str:
    return f"{prefix}:{{{prefix}}}:rl:{limiter_id}"


def redis_now_ms(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds * 1000 + micros / 1000


def rate(burst: int) -> dict[str, Any]:
    return {"requests_per_second": TINY_RATE, "burst_size": burst}


def concurrency(limit: int) -> dict[str, Any]:
    return {"max_concurrent_requests": limit}


def assert_rate_limited(reply: Reply, scope_words: str) -> None:
    assert reply.status == 429, reply
    error = reply.json()["error"]
    assert error["code"] == "rate_limit", reply
    assert error["type"] == "rate_limit_error", reply
    assert f"rate limit of {scope_words}" in error["message"], reply
    assert int(reply.headers["retry-after"]) >= 1, reply.headers


def assert_concurrency_limited(reply: Reply, scope_words: str) -> None:
    assert reply.status == 429, reply
    error = reply.json()["error"]
    assert error["code"] == "concurrency_limit_exceeded", reply
    assert f"concurrency limit of {scope_words}" in error["message"], reply
    assert "retry-after" not in reply.headers, reply.headers


# ---------------------------------------------------------------------------------------------
# The shared cluster: two instances x two workers on one Redis prefix


@dataclass
class Cluster:
    a: GatewayProcess
    b: GatewayProcess
    prefix: str
    redis: redis.Redis
    mocks: dict[str, MockUpstream]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if not redis_available(url, timeout=0.5):
        pytest.skip(f"no Redis answered PING at {url}")
    prefix = f"onwards-test-{uuid.uuid4().hex[:12]}"
    names = ("main", "conc", "stream", "renew", "p0", "p1", "q0", "q1")
    with contextlib.ExitStack() as stack:
        mocks = {name: stack.enter_context(MockUpstream(name)) for name in names}
        client = redis.Redis.from_url(url)
        stack.callback(client.close)
        stack.callback(drop_keys, client, prefix)

        def v1(name: str) -> str:
            return mocks[name].url + "/v1"

        config = {
            # A busy machine can hold an admission's reply past the default 250 ms; that request
            # would then be served under the failure policy while Redis still grants its permit, and
            # the permit only comes back when the late reply arrives (test_limits_faults.py covers
            # that path). These tests are about exact counting, so Redis gets time to answer.
            "limits": {"lease_ttl_ms": 2000, "renew_interval_ms": 500, "redis_timeout_ms": 5000},
            "auth": {
                "key_definitions": {
                    "alice": {"key": ALICE, "rate_limit": rate(4)},
                    "basic": {"key": BASIC, "rate_limit": rate(2)},
                    "premium": {"key": PREMIUM, "rate_limit": rate(5)},
                    "pool_user": {
                        "key": POOL_USER,
                        "rate_limit": rate(10),
                        "concurrency_limit": concurrency(1),
                    },
                }
            },
            "targets": {
                "open": {"url": v1("main")},
                "burst7": {"url": v1("main"), "rate_limit": rate(7)},
                "conc3": {"url": v1("conc"), "concurrency_limit": concurrency(3)},
                "serial1": {"url": v1("main"), "concurrency_limit": concurrency(1)},
                "tight": {"url": v1("main"), "keys": ["alice"], "rate_limit": rate(2)},
                "loose": {"url": v1("main"), "keys": ["alice"]},
                "tiers": {"url": v1("main"), "keys": ["basic", "premium"]},
                "stream1": {"url": v1("stream"), "concurrency_limit": concurrency(1)},
                "renew1": {"url": v1("renew"), "concurrency_limit": concurrency(1)},
                "pool": {
                    "strategy": "priority",
                    "fallback": {"enabled": True, "on_rate_limit": True},
                    "keys": ["pool_user"],
                    "rate_limit": rate(3),
                    "concurrency_limit": concurrency(1),
                    "providers": [
                        {"url": v1("p0"), "rate_limit": rate(1), "concurrency_limit": concurrency(1)},
                        {"url": v1("p1")},
                    ],
                },
                "pool503": {
                    "strategy": "priority",
                    "fallback": {"enabled": True, "on_status": [5]},
                    "concurrency_limit": concurrency(2),
                    "providers": [{"url": v1("q0"), "concurrency_limit": concurrency(1)}, {"url": v1("q1")}],
                },
            },
        }
        path = tmp_path_factory.mktemp("limits") / "config.json"
        path.write_text(json.dumps(config))
        a = GatewayProcess(path, workers=WORKERS, redis_url=url, redis_prefix=prefix)
        b = GatewayProcess(path, workers=WORKERS, redis_url=url, redis_prefix=prefix)
        stack.callback(stop_gateway, a)
        stack.callback(stop_gateway, b)
        start_gateways(a, b, warm_model="open")
        yield Cluster(a, b, prefix, client, mocks)


# ---------------------------------------------------------------------------------------------
# 1. Exactness across instances and workers


def test_rate_limit_is_exact_across_two_instances_and_four_workers(cluster: Cluster) -> None:
    jobs = [(lambda gw=gw: call(gw, "burst7")) for gw in [cluster.a, cluster.b] * 20]
    replies = all_at_once(jobs)
    assert statuses(replies).count(200) == 7, statuses(replies)
    refused = [r for r in replies if r.status != 200]
    assert len(refused) == 33, statuses(replies)
    for reply in refused:
        assert_rate_limited(reply, "this model")
    # Exact only means something if every worker took part.
    for gw in (cluster.a, cluster.b):
        served = wait_until(
            lambda gw=gw: len(pids := access_pids(gw, "target=burst7 ")) == WORKERS and pids,
            timeout=3,
            message=f"not every worker of {gw.url} served a request",
        )
        assert served == set(gw.worker_pids())
        assert "limiter=degraded" not in gw.output()


# ---------------------------------------------------------------------------------------------
# 2. Concurrency limit, and permits that come back


def test_concurrency_limit_admits_exactly_three_and_gets_its_permits_back(cluster: Cluster) -> None:
    mock = cluster.mocks["conc"]
    gws = [cluster.a, cluster.b]

    def round_of(delay: float) -> list[Reply]:
        return all_at_once(
            [(lambda i=i: call(gws[i % 2], "conc3", headers={"x-mock-delay": str(delay)})) for i in range(12)]
        )

    for delay in (1.5, 0.5):
        replies = round_of(delay)
        assert statuses(replies).count(200) == 3, statuses(replies)
        for reply in replies:
            if reply.status != 200:
                assert_concurrency_limited(reply, "this model")
    assert mock.max_in_flight == 3
    assert mock.request_count == 6
    assert cluster.redis.zcard(semaphore_key(cluster.prefix, "target:conc3")) == 0


def test_a_client_coming_straight_back_finds_its_permit_free(cluster: Cluster) -> None:
    # The permit's release is written to Redis before the last byte of the response leaves, so a
    # client that sends its next request the moment it has read the last one finds it free,
    # whichever instance and worker the next request lands on; plain and streamed responses both.
    # (That the release is written before the handler sends on is proven in test_lua_redis.py.)
    #
    # One race remains, in Redis itself: the release and the next admission arrive on two
    # connections, and when Redis is busy for that half millisecond its event loop may serve the
    # admission's connection first (epoll hands back an fd still queued from its previous read
    # before one that became readable since). On a loaded two-core machine that happens to up to
    # a third of these come-backs. Such a refusal finds the permit free on the client's immediate
    # retry; a release that was delayed past it, or lost, is refused again and fails the test.
    gws = [cluster.a, cluster.b]
    refused: list[tuple[int, bytes]] = []
    for i in range(60):
        gw = gws[i % 2]
        reply = call(gw, "serial1", stream=i % 3 == 0)
        if reply.status == 429:
            refused.append((i, reply.body[:200]))
            reply = call(gw, "serial1", stream=i % 3 == 0)
        assert reply.status == 200, (i, reply.status, reply.body[:300], refused)
    assert cluster.redis.zcard(semaphore_key(cluster.prefix, "target:serial1")) == 0


# ---------------------------------------------------------------------------------------------
# 3. All-or-nothing: a target's refusal spends nothing of the key's bucket


def test_all_or_nothing_key_and_target_buckets(cluster: Cluster) -> None:
    gws = [cluster.a, cluster.b]
    tight = [call(gws[i % 2], "tight", token=ALICE) for i in range(5)]
    loose = [call(gws[i % 2], "loose", token=ALICE) for i in range(3)]
    assert statuses(tight) == [200, 200, 429, 429, 429], tight
    assert statuses(loose) == [200, 200, 429], loose
    for reply in tight[2:]:
        assert_rate_limited(reply, "this model")
    assert_rate_limited(loose[2], "your API key")


# ---------------------------------------------------------------------------------------------
# 4. Per-key tiers on one target


def test_key_tiers_have_their_own_buckets(cluster: Cluster) -> None:
    gws = [cluster.a, cluster.b]
    basic: list[Reply] = []
    premium: list[Reply] = []
    for i in range(7):  # interleaved: one key's traffic must not touch the other's bucket
        basic.append(call(gws[i % 2], "tiers", token=BASIC))
        premium.append(call(gws[(i + 1) % 2], "tiers", token=PREMIUM))
    assert statuses(basic) == [200] * 2 + [429] * 5, basic
    assert statuses(premium) == [200] * 5 + [429] * 2, premium
    for reply in [*basic[2:], *premium[5:]]:
        assert_rate_limited(reply, "your API key")
        text = reply.body.decode() + json.dumps(reply.headers)
        for token in ALL_TOKENS:
            assert token not in text, reply
        for name in ("basic", "premium"):  # nor the definition names (the limiter ids)
            assert name not in text, reply


# ---------------------------------------------------------------------------------------------
# 5. A client that leaves mid-stream gives its permit back


def test_client_disconnect_mid_stream_releases_the_permit(cluster: Cluster) -> None:
    gw = cluster.a
    mock = cluster.mocks["stream"]
    stream = OpenStream(gw, "stream1", {"x-mock-chunks": "100", "x-mock-chunk-delay": "0.1"})
    try:
        response = stream.response()
        assert response.status == 200
        first = response.read1(65536)
        assert first.startswith(b"data: "), first
        assert_concurrency_limited(call(gw, "stream1"), "this model")
    finally:
        stream.close()
    wait_until(
        lambda: (r := call(gw, "stream1")).status == 200 and r,
        timeout=1.0,
        interval=0.05,
        message="no request admitted within 1 s of the client disconnecting",
    )
    # The gateway also hung up on the upstream instead of streaming 10 s into the void.
    wait_until(lambda: mock.disconnects >= 1, timeout=2, message="upstream stream was not closed")


# ---------------------------------------------------------------------------------------------
# 9. A long stream renews its lease and holds its permit throughout


def test_long_stream_renews_its_lease(cluster: Cluster) -> None:
    gw = cluster.a
    key = semaphore_key(cluster.prefix, "target:renew1")
    mock = cluster.mocks["renew"]
    result: dict[str, Any] = {}

    def consume() -> None:
        try:
            reply = call(
                gw, "renew1", stream=True, headers={"x-mock-chunks": "40", "x-mock-chunk-delay": "0.1"}
            )
            result["reply"] = reply
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    reader = threading.Thread(target=consume, daemon=True)
    started = time.monotonic()
    reader.start()
    wait_until(lambda: mock.in_flight == 1, timeout=3, message="the stream never reached the upstream")
    leases: set[bytes] = set()
    checks = 0
    # Sample past the lease TTL (2 s): without renewal the lease would be gone by then.
    while reader.is_alive() and time.monotonic() - started < 3.6:
        held = cluster.redis.zrange(key, 0, -1, withscores=True)
        now = redis_now_ms(cluster.redis)
        assert len(held) == 1, held
        member, expiry = held[0]
        assert expiry > now, (expiry, now)
        leases.add(member)
        assert_concurrency_limited(call(gw, "renew1"), "this model")
        checks += 1
        time.sleep(0.4)
    assert time.monotonic() - started >= 3.0, "the stream ended before its lease needed renewing"
    assert checks >= 6
    assert len(leases) == 1, "the stream's permit changed hands"
    reader.join(10)
    assert "error" not in result, result
    reply = result["reply"]
    assert reply.status == 200
    assert reply.body.count(b"data: ") == 41 and reply.body.rstrip().endswith(b"data: [DONE]"), reply
    assert call(gw, "renew1").status == 200
    assert cluster.redis.zcard(key) == 0


# ---------------------------------------------------------------------------------------------
# 10. Provider limits with fallback.on_rate_limit do not double-count the pool and the key


def test_provider_rate_limit_falls_over_without_double_counting(cluster: Cluster) -> None:
    gws = [cluster.a, cluster.b]
    replies = [call(gws[i % 2], "pool", token=POOL_USER) for i in range(5)]
    assert statuses(replies) == [200, 200, 200, 429, 429], replies
    served_by = [r.headers.get("x-mock-name") for r in replies[:3]]
    assert served_by == ["p0", "p1", "p1"], served_by
    for reply in replies[3:]:
        assert_rate_limited(reply, "this model")
    assert cluster.mocks["p0"].request_count == 1
    assert cluster.mocks["p1"].request_count == 2
    # The key's bucket paid once per served request, not once per provider tried.
    tokens = float(cluster.redis.hget(bucket_key(cluster.prefix, "key:pool_user"), "tokens"))
    assert 7 - 0.01 < tokens < 7 + 0.01, tokens
    # No permit of the key, the pool or provider 0 outlived its request.
    # (Redis deletes a sorted set when its last member goes, so an empty semaphore has no key.)
    held = list(cluster.redis.scan_iter(match=semaphore_key(cluster.prefix, "*pool*"), count=500))
    assert held == [], {key: cluster.redis.zrange(key, 0, -1) for key in held}


# ---------------------------------------------------------------------------------------------
# 10b. Provider concurrency limits and status fallback give back exactly the failed provider's permit


def test_provider_concurrency_and_status_fallback_keep_permits_straight(cluster: Cluster) -> None:
    gw = cluster.a
    q0, q1 = cluster.mocks["q0"], cluster.mocks["q1"]

    # q0 answers 503: its permit goes back, the pool's stays held once, q1 serves.
    q0.fail_next(1, 503)
    reply = call(gw, "pool503")
    assert (reply.status, reply.headers.get("x-mock-name")) == (200, "q1"), reply
    reply = call(gw, "pool503")
    assert (reply.status, reply.headers.get("x-mock-name")) == (200, "q0"), reply

    # q0 at its limit of 1 is skipped like a busy provider; the pool (limit 2) admits both.
    slow: dict[str, Reply] = {}
    holder = threading.Thread(
        target=lambda: slow.update(r=call(gw, "pool503", headers={"x-mock-delay": "1"}))
    )
    holder.start()
    try:
        wait_until(lambda: q0.in_flight == 1, timeout=3, message="slow request did not reach q0")
        reply = call(gw, "pool503")
        assert (reply.status, reply.headers.get("x-mock-name")) == (200, "q1"), reply
        assert cluster.redis.zcard(semaphore_key(cluster.prefix, "target:pool503")) == 1
    finally:
        holder.join(10)
    assert (slow["r"].status, slow["r"].headers.get("x-mock-name")) == (200, "q0"), slow
    assert (q0.request_count, q1.request_count) == (3, 2)
    held = list(cluster.redis.scan_iter(match=semaphore_key(cluster.prefix, "*pool503*"), count=500))
    assert held == [], {key: cluster.redis.zrange(key, 0, -1) for key in held}


# ---------------------------------------------------------------------------------------------
# 6. A SIGKILLed worker's permit comes back by lease expiry


def test_sigkilled_worker_permit_returns_after_lease_ttl(
    gateway: Callable[..., GatewayProcess],
    mock_upstream: MockUpstream,
    write_config: Callable[..., Path],
    redis_url: str,
    unique_prefix: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        path = write_config(
            {
                "limits": {"lease_ttl_ms": 3000, "renew_interval_ms": 1000},
                "targets": {"held": {"url": mock_upstream.url + "/v1", "concurrency_limit": concurrency(1)}},
            }
        )
        gw = gateway(path, workers=WORKERS, redis_url=redis_url, redis_prefix=unique_prefix)
        wait_workers_ready(gw, WORKERS)
        key = semaphore_key(unique_prefix, "target:held")

        hanging = OpenStream(gw, "held", {"x-mock-hang": "1"})
        try:
            wait_until(
                lambda: mock_upstream.in_flight == 1, timeout=5, message="hanging request not forwarded"
            )
            assert client.zcard(key) == 1
            assert_concurrency_limited(call(gw, "held"), "this model")
            owner = socket_owner(gw, hanging.client_port)
            workers = gw.worker_pids()
            victims = [owner] if owner is not None else workers
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_until(lambda: not set(victims) & set(gw.worker_pids()), timeout=5, message="kill failed")
        finally:
            hanging.close()
        assert client.zcard(key) == 1, "nobody may release the dead worker's permit"

        seen: list[int | None] = []

        def admitted() -> bool:
            reply = try_call(gw, "held", timeout=2)
            seen.append(None if reply is None else reply.status)
            return reply is not None and reply.status == 200

        wait_until(admitted, timeout=3.0 + 2.0, interval=0.1, message=f"never admitted: {seen}")
        assert time.monotonic() - killed < 5.0 + 2.0
        if owner is not None:
            # The surviving worker kept refusing until the lease ran out (a connection that was
            # queued for the killed worker gets no answer at all).
            answered = [status for status in seen if status is not None]
            assert answered[0] == 429, seen
        # Granian replaced the dead worker.
        wait_until(
            lambda: len(gw.worker_pids()) == WORKERS and not set(victims) & set(gw.worker_pids()),
            timeout=STARTUP_TIMEOUT,
            message=f"workers not respawned: {gw.worker_pids()} (killed {victims})",
        )
    finally:
        drop_keys(client, unique_prefix)
        client.close()


# ---------------------------------------------------------------------------------------------
# 7. Redis restarted mid-run (scripts gone): limits keep working and hold again


def test_redis_restart_and_script_flush_keep_limits_working(
    gateway: Callable[..., GatewayProcess],
    mock_upstream: MockUpstream,
    write_config: Callable[..., Path],
    private_redis: Callable[..., RedisServer],
    unique_prefix: str,
) -> None:
    server = private_redis(None)
    path = write_config({"targets": {"r": {"url": mock_upstream.url + "/v1", "rate_limit": rate(3)}}})
    gw = gateway(path, workers=WORKERS, redis_url=server.url, redis_prefix=unique_prefix)
    wait_workers_ready(gw, WORKERS)

    def burst() -> list[int]:
        return [call(gw, "r").status for _ in range(5)]

    assert burst() == [200, 200, 200, 429, 429]

    # Script cache flushed under a running gateway: NOSCRIPT, reload, repeat, transparently.
    with redis.Redis.from_url(server.url) as client:
        client.script_flush()
    reply = call(gw, "r")
    assert_rate_limited(reply, "this model")  # a degraded (unlimited) answer would be a 200

    # Restarted: every key and script is gone; the buckets start full again.
    server.kill()
    server = private_redis(server.port)
    assert burst() == [200, 200, 200, 429, 429], gw.output()[-3000:]
    assert "limiter=degraded" not in gw.output()
    with redis.Redis.from_url(server.url) as client:
        assert client.exists(bucket_key(unique_prefix, "target:r")) == 1


# ---------------------------------------------------------------------------------------------
# 8. Redis down: policy allow serves, policy deny refuses clearly, nobody waits long


def test_redis_down_policies_answer_fast_and_ready_reports_them(
    mock_upstream: MockUpstream,
    write_config: Callable[..., Path],
    private_redis: Callable[..., RedisServer],
    unique_prefix: str,
) -> None:
    server = private_redis(None)
    gateways: dict[str, GatewayProcess] = {}
    for policy in ("allow", "deny"):
        path = write_config(
            {
                "limits": {"on_redis_error": policy, "redis_timeout_ms": 250},
                "targets": {"t": {"url": mock_upstream.url + "/v1", "rate_limit": rate(1000)}},
            },
            name=f"{policy}.json",
        )
        gateways[policy] = GatewayProcess(
            path, workers=WORKERS, redis_url=server.url, redis_prefix=f"{unique_prefix}-{policy}"
        )
    allow, deny = gateways["allow"], gateways["deny"]
    try:
        start_gateways(allow, deny)
        for gw in (allow, deny):
            assert call(gw, "t").status == 200
            assert get(gw, "/ready").status == 200

        expected = {"allow": 200, "deny": 503}

        def check(policy: str, gw: GatewayProcess) -> Reply:
            reply = call(gw, "t", timeout=5)
            assert reply.elapsed < 1.5, (policy, reply.elapsed)
            assert reply.status == expected[policy], (policy, reply)
            if policy == "deny":
                error = reply.json()["error"]
                assert error["code"] == "limiter_unavailable", reply
                assert error["type"] and "limiter" in error["message"], reply
            return reply

        # Hung (SIGSTOP): connections open, nothing answers; each call is bounded by the timeout.
        server.send_signal(signal.SIGSTOP)
        for policy, gw in gateways.items():
            marker = "limiter=degraded" if policy == "allow" else "limiter=unavailable"

            def every_worker_failed(
                policy: str = policy, gw: GatewayProcess = gw, marker: str = marker
            ) -> bool:
                check(policy, gw)
                return access_pids(gw, marker) == set(gw.worker_pids())

            wait_until(every_worker_failed, timeout=10, interval=0.01, message=f"{policy}: not every worker")

        # Dead: connections refused.
        server.kill()
        for policy, gw in gateways.items():
            for _ in range(6):
                check(policy, gw)

        # Every worker's circuit is open now: /ready follows the policy on each of them.
        for _ in range(6):
            ready = get(allow, "/ready")
            assert ready.status == 200, ready
            assert ready.json()["limiter_healthy"] is False
            not_ready = get(deny, "/ready")
            assert not_ready.status == 503, not_ready
            assert not_ready.json()["status"] == "limiter_unavailable"
    finally:
        stop_gateway(allow)
        stop_gateway(deny)
