"""The Redis limiter must not fail open while Redis is fine: a burst, a restart, a busy start.

Each of these used to open the circuit breaker of a healthy setup, so a worker served without
limits (policy allow) or refused everything (policy deny) until the breaker's probe a second later:

* a burst of more than 100 concurrent admissions in one process (redis-py's default pool raised
  "Too many connections"; below that it opened one connection per call, slower than the timeout);
* the first call after a Redis restart (redis-py 8 skipped its check for connections the server
  had closed, so each pooled connection failed once);
* a start on a busy host (the first connection of a process was held to the request timeout).

Every test uses its own key prefix and deletes its keys; the restart uses a private redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from onwards.config.model import LimitsSettings, RateCheck
from onwards.limits import RedisLimiter, build_limiter
from tests.support.processes import free_port, redis_available

pytestmark = pytest.mark.redis


@pytest.fixture
async def cleanup(redis_url: str, unique_prefix: str) -> AsyncIterator[list[RedisLimiter]]:
    """Limiters put in the list are closed, and the prefix's keys deleted, at teardown."""
    limiters: list[RedisLimiter] = []
    yield limiters
    for limiter in limiters:
        await limiter.close()
    client = aioredis.Redis.from_url(redis_url)
    keys = [key async for key in client.scan_iter(match=f"{unique_prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_burst_of_concurrent_admissions_is_exact_and_keeps_the_circuit_closed(
    redis_url: str, unique_prefix: str, cleanup: list[RedisLimiter]
) -> None:
    # A generous timeout: this is about running out of connections, not about speed.
    settings = LimitsSettings(redis_timeout_ms=3000)
    limiter = RedisLimiter(redis_url, unique_prefix, settings)
    cleanup.append(limiter)
    await limiter.start(settings)
    bucket = RateCheck("target", "target:burst", 0.001, 7)
    decisions = await asyncio.gather(*(limiter.admit((bucket,)) for _ in range(250)))
    assert [d for d in decisions if d.degraded] == []
    assert sum(d.allowed for d in decisions) == 7
    assert limiter.state == "closed"


async def _relay(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: tuple[str, int]
) -> None:
    up_reader, up_writer = await asyncio.open_connection(*upstream)

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_slow_first_connection_at_start_does_not_open_the_circuit(
    redis_url: str, unique_prefix: str, cleanup: list[RedisLimiter]
) -> None:
    target = urlsplit(redis_url)
    if target.scheme != "redis" or not target.hostname:
        pytest.skip("needs a TCP Redis URL to put a relay in front of")
    upstream = (target.hostname, target.port or 6379)
    # A listener whose accept queue is full: the kernel drops the limiter's SYN and the client
    # resends it about a second later, when the relay has started to accept. That is a connect
    # ten times slower than the request timeout, as a worker's first one can be on a host that
    # starts every worker at once.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    writers: list[asyncio.StreamWriter] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await _relay(reader, writer, upstream)

    async def serve_later() -> asyncio.Server:
        await asyncio.sleep(0.3)
        return await asyncio.start_server(relay, sock=listener)

    serving = asyncio.create_task(serve_later())
    try:
        settings = LimitsSettings(redis_timeout_ms=100)
        limiter = build_limiter(f"redis://127.0.0.1:{port}{target.path or '/0'}", unique_prefix, settings)
        assert isinstance(limiter, RedisLimiter)
        cleanup.append(limiter)
        await limiter.start(settings)
        assert limiter.state == "closed"
        bucket = RateCheck("target", "target:slow-start", 0.001, 2)
        decisions = [await limiter.admit((bucket,)) for _ in range(3)]  # on the connection made at start
        assert [(d.allowed, d.degraded) for d in decisions] == [(True, False), (True, False), (False, False)]
        await limiter.close()  # drop the relayed connection before the relay stops
    finally:
        server = await serving
        for writer in writers:
            writer.close()
        for filler in fillers:
            filler.close()
        server.close()
        await server.wait_closed()


class _RedisServer:
    """A throw-away redis-server without persistence, restartable on the same port."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*argv, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not redis_available(self.url, timeout=0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


@pytest.mark.integration
async def test_the_first_calls_after_a_redis_restart_are_served_by_redis(unique_prefix: str) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = _RedisServer(binary, free_port())
    server.start()
    limiter = None
    try:
        settings = LimitsSettings(redis_timeout_ms=1000)
        limiter = RedisLimiter(server.url, unique_prefix, settings)
        await limiter.start(settings)
        bucket = RateCheck("target", "target:restart", 0.001, 2)
        # Several pooled connections, all of which the restart closes.
        await asyncio.gather(*(limiter.admit((bucket,)) for _ in range(8)))
        server.kill()
        await asyncio.sleep(0.2)  # a running worker's event loop sees its connections close
        server.start()  # empty: no keys, no scripts
        decisions = [await limiter.admit((bucket,)) for _ in range(3)]
        assert [(d.allowed, d.degraded) for d in decisions] == [(True, False), (True, False), (False, False)]
        assert limiter.state == "closed"
    finally:
        if limiter is not None:
            await limiter.close()
        server.kill()
