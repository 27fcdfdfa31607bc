"""The limiter's connection to Redis: one pipelined RESP connection per worker.

The limiter sends two script calls per request (admit, release). Through redis-py each call
costs 60-100 us of Python (connection checkout, command packing, response parsing,
per-call futures and retries), which measured as the largest share of a gateway worker's
CPU. This transport keeps ONE connection per worker, pipelines every call on it (replies come
back in order, so a FIFO of futures matches them), and writes all the commands a worker
issued in one event-loop iteration with one syscall. Concurrent requests therefore share
round trips and syscalls instead of each paying their own.

It speaks only what the limiter needs (EVALSHA, SCRIPT LOAD, PING, AUTH, SELECT) and raises
redis-py's exception classes, so the limiter handles errors the same whatever the transport.
`Transport` is what the limiter needs of it; tests/support/redis_fake.py implements it over
fakeredis so the limiter's batched path runs unchanged in unit tests.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from typing import Any, Protocol

import hiredis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    ResponseError,
)

from onwards.limits.redis.url import RedisTarget, parse_redis_url


class Transport(Protocol):
    """What the limiter needs of a connection to Redis."""

    # Called when a connection opens or is lost: the server behind it may have changed.
    on_change: Callable[[], None] | None
    # The bound of opening a connection (the limiter raises it while a worker starts).
    connect_timeout: float

    def send_now(self, commands: list[bytes]) -> list[asyncio.Future[Any]] | None:
        """Write packed `commands` at once, in one write, on the open connection; a future for
        each reply, or None when no connection is open (then use execute_packed)."""

    async def execute_packed(self, packed: bytes) -> Any:
        """Send one packed command (opening a connection if needed) and return its reply."""

    async def execute_command(self, *args: Any) -> Any:
        """Pack and send one command, return its reply."""

    def abort(self) -> None:
        """Drop the connection (a stuck peer); the next call opens a new one."""

    async def aclose(self) -> None:
        """Close for good."""


class _ReplyError(Exception):
    pass


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, int | float):
        return repr(arg).encode()
    raise TypeError(f"cannot send {type(arg).__name__} to Redis")


def pack_command(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _encode(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _error(message: str) -> ResponseError | AuthenticationError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return AuthenticationError(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=_ReplyError)
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.pending: list[bytes] = []
        self.flush_scheduled = False
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio classes

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self.abort(ConnectionError("Redis sent an unexpected reply"))
                return
            future = waiters.popleft()
            if future.done():  # its caller timed out; the reply is dropped in order
                continue
            if isinstance(reply, _ReplyError):
                future.set_exception(_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Redis connection lost: {exc or 'closed by server'}"))
        if self.on_lost is not None:
            self.on_lost()

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise self.lost
        future = self._enqueue(packed)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return future

    def send_now(self, commands: list[bytes]) -> list[asyncio.Future[Any]]:
        """Like send() for each command, but all written to the socket at once, in one write
        (with anything batched before them)."""
        if self.lost is not None:
            raise self.lost
        futures = [self._enqueue(packed) for packed in commands]
        self._flush()
        return futures

    def _enqueue(self, packed: bytes) -> asyncio.Future[Any]:
        # The reply future goes in the FIFO in the same order as the command in the write buffer.
        future = self.loop.create_future()
        self.waiters.append(future)
        self.pending.append(packed)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.pending and self.transport is not None and self.lost is None:
            data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
            self.pending.clear()
            self.transport.write(data)

    def abort(self, exc: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        self.pending.clear()
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(exc)


class PipelinedRedis:
    """One pipelined connection, opened on first use and again after it is lost."""

    def __init__(
        self,
        url: str | RedisTarget,
        *,
        connect_timeout: float,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.target = parse_redis_url(url) if isinstance(url, str) else url
        if self.target.topology != "single":
            raise ValueError(f"PipelinedRedis connects to one server, not a {self.target.topology}")
        self.on_change = on_change
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def execute_command(self, *args: Any) -> Any:
        return await self.execute_packed(pack_command(args))

    async def execute_packed(self, packed: bytes) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        return await protocol.send(packed)

    def send_now(self, commands: list[bytes]) -> list[asyncio.Future[Any]] | None:
        """Write packed `commands` at once, in one write, on the open connection; a future for each
        reply, or None when no connection is open (the caller falls back to execute_packed)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or protocol.transport is None:
            return None
        return protocol.send_now(commands)

    def abort(self) -> None:
        """Drop the connection (a stuck peer); the next call opens a new one."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.abort(ConnectionError("Redis connection reset by the limiter"))

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            protocol._fail(ConnectionError("Redis client closed"))

    async def _connect(self) -> _Protocol:
        # Single flight: a burst of requests on a fresh or lost connection opens one, not many.
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            protocol = await self._open(loop)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else ConnectionError("Redis connect cancelled")
            self._connecting.set_exception(failure)
            self._connecting.exception()  # mark retrieved: nobody else may be waiting
            self._connecting = None
            raise
        self._protocol = protocol
        if self.on_change is not None:
            self.on_change()
        self._connecting.set_result(protocol)
        self._connecting = None
        return protocol

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        t = self.target
        async with asyncio.timeout(self.connect_timeout):
            if t.path is not None:
                _, protocol = await loop.create_unix_connection(
                    lambda: _Protocol(loop, self.on_change), t.path
                )
            else:
                host, port = t.nodes[0]
                tls = ssl.create_default_context() if t.tls else None
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(loop, self.on_change), host, port, ssl=tls
                )
            if t.password is not None:
                auth = ("AUTH", t.username, t.password) if t.username else ("AUTH", t.password)
                await protocol.send(pack_command(auth))
            if t.db:
                await protocol.send(pack_command(("SELECT", t.db)))
        return protocol


def open_transport(target: RedisTarget, *, slot_tag: str, connect_timeout: float = 2.0) -> Transport:
    """The transport for a parsed URL; nothing connects until the first call."""
    del slot_tag  # only a cluster needs to know which slot its keys live in
    return PipelinedRedis(target, connect_timeout=connect_timeout)
