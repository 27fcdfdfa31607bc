"""The limiter's connection to Redis: one pipelined RESP connection per worker.

The limiter sends two script calls per request (admit, release). Through redis-py each call
costs 60-100 us of Python (connection checkout, command packing, response parsing,
per-call futures and retries), which measured as the largest share of a gateway worker's
CPU. This transport keeps ONE connection per worker, pipelines every call on it (replies come
back in order, so a FIFO of futures matches them), and writes all the commands a worker
issued in one event-loop iteration with one syscall. Concurrent requests therefore share
round trips and syscalls instead of each paying their own.

The connection goes to the node that holds this gateway's keys on every topology (one server,
the master a Sentinel names, the cluster node owning the gateway's one hash slot; see locate.py),
so admission stays one round trip and one write per loop iteration everywhere. It speaks only what
the limiter needs (EVALSHA, SCRIPT LOAD, PING, AUTH, SELECT, INFO, ROLE, ASKING) and raises
redis-py's exception classes, so the limiter handles errors the same whatever the transport.
`Transport` is what the limiter needs of it; tests/support/redis_fake.py implements it over
fakeredis so the limiter's batched path runs unchanged in unit tests.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Protocol

import hiredis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    ResponseError,
)

from onwards.limits.redis.asking import AskChannel
from onwards.limits.redis.errors import AskRedirect, RedirectError, RedisMisconfigured, TryAgainError
from onwards.limits.redis.locate import Locator, Opener, parse_info, tls_context, wait_all
from onwards.limits.redis.switches import SwitchWatch
from onwards.limits.redis.url import RedisTarget, parse_redis_url


class Transport(Protocol):
    """What the limiter needs of a connection to Redis."""

    # Called when a connection opens or is lost: the server behind it may have changed.
    on_change: Callable[[], None] | None
    # Called with `send` when a connection opens: what it sends goes before anything else on it.
    on_connect: Callable[[Callable[[bytes], asyncio.Future[Any]]], None] | None
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

    def redirected(self, exc: RedirectError) -> None:
        """A node said the keys are elsewhere: drop the connection, find the owner next time."""

    async def asking(self, node: tuple[str, int], packed: bytes) -> Any:
        """Send ASKING and then `packed` to `node` (the importing node an ASK named); its reply."""

    @property
    def connected(self) -> bool:
        """True while a connection is open."""

    def stuck_for(self) -> float:
        """Seconds calls have waited on the open connection without any reply."""

    async def check_owner(self) -> None:
        """Drop a silent connection when the keys are now on another node (Sentinel, Cluster)."""

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
    if message.startswith(("MOVED ", "READONLY")):
        return RedirectError(message)
    if message.startswith("ASK "):
        return AskRedirect(message)
    if message.startswith("TRYAGAIN"):
        return TryAgainError(message)
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
        # When replies last came in, or calls started waiting on an idle connection.
        self.quiet_since = loop.time()
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio classes

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        self.quiet_since = self.loop.time()
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
            if self.closing and not waiters and self.transport is not None:
                self.transport.close()

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

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.waiters and self.transport is not None:
            self.transport.close()

    def _enqueue(self, packed: bytes) -> asyncio.Future[Any]:
        # The reply future goes in the FIFO in the same order as the command in the write buffer.
        if not self.waiters:
            self.quiet_since = self.loop.time()
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


class PipelinedRedis(Opener):
    """One pipelined connection to the node holding the keys, opened on first use and after a loss."""

    def __init__(
        self,
        url: str | RedisTarget,
        *,
        connect_timeout: float,
        slot_tag: str = "",
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.target = parse_redis_url(url) if isinstance(url, str) else url
        self.locator = Locator(self.target, slot_tag)
        self.on_change = on_change
        self.on_connect: Callable[[Callable[[bytes], asyncio.Future[Any]]], None] | None = None
        self.connect_timeout = connect_timeout
        self.address: tuple[str, int] | None = None  # the node connected to, for logs and tests
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        # Calls a migrating cluster node sent elsewhere with ASK; dropped with the data connection.
        self._asked = AskChannel(self._open_asked, pack_command(("ASKING",)))
        self._switches = (
            SwitchWatch(self.target, self.abort, connect_timeout)
            if self.target.topology == "sentinel"
            else None
        )

    @property
    def topology(self) -> str:
        return self.locator.topology

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
        self._asked.close()

    async def asking(self, node: tuple[str, int], packed: bytes) -> Any:
        """Send ASKING and then `packed` to `node` (see asking.py)."""
        return await self._asked.send(node, packed)

    async def _open_asked(self, node: tuple[str, int]) -> _Protocol:
        loop = asyncio.get_running_loop()
        t = self.target
        async with asyncio.timeout(self.connect_timeout):
            protocol = await self._dial(loop, node, lambda: _Protocol(loop))
            if t.password is not None:  # a cluster has only db 0: nothing else to set up
                auth = ("AUTH", t.username, t.password) if t.username else ("AUTH", t.password)
                try:
                    await protocol.send(pack_command(auth))
                except BaseException:
                    protocol.abort(ConnectionError("Redis handshake failed"))
                    raise
        return protocol

    def redirected(self, exc: RedirectError) -> None:
        # New calls go to a new connection; the old one closes once its in-flight calls have their
        # (redirect) replies, so they fail one by one and are resent, not cut off.
        self.locator.moved(exc.address)
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.close_when_idle()
        self._asked.close()

    @property
    def connected(self) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.lost is None and protocol.transport is not None

    def stuck_for(self) -> float:
        """Seconds the open connection has had calls waiting without any reply (0 when none wait)."""
        protocol = self._protocol
        if protocol is None or not protocol.waiters:
            return 0.0
        return protocol.loop.time() - protocol.quiet_since

    async def check_owner(self) -> None:
        """While calls wait on a silent connection, ask the Sentinels or the slot map whether the
        keys have moved; if so the connection is dropped at once (late replies from a node that is
        no longer the owner settle nothing that matters), instead of after STUCK_S."""
        if self.topology == "single" or self.stuck_for() == 0.0 or self.address is None:
            return
        if await self.locator.locate(self) != self.address:
            self.abort()

    async def aclose(self) -> None:
        if self._switches is not None:
            await self._switches.close()
        self._asked.close()
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
        if self._switches is not None:
            self._switches.start()
        if self.on_connect is not None:
            # Before any waiting caller resumes, so this goes first on the new connection.
            self.on_connect(protocol.send)
        if self.on_change is not None:
            self.on_change()
        self._connecting.set_result(protocol)
        self._connecting = None
        return protocol

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        t = self.target
        async with asyncio.timeout(self.connect_timeout):
            # At most twice: a redis:// node that turns out to be a cluster node is a seed.
            for _ in range(2):
                if t.path is not None:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(loop, self.on_change), t.path
                    )
                else:
                    node = await self.locator.locate(self)
                    protocol = await self._dial(loop, node, lambda: _Protocol(loop, self.on_change))
                    self.address = node
                try:
                    again = await self._handshake(protocol)
                except BaseException:
                    protocol.abort(ConnectionError("Redis handshake failed"))
                    raise
                if not again:
                    return protocol
                protocol.abort(ConnectionError("reconnecting to the cluster node owning the slot"))
        raise RedisMisconfigured(f"{t.redacted}: the cluster lookup did not settle")

    async def _dial(
        self, loop: asyncio.AbstractEventLoop, node: tuple[str, int], factory: Callable[[], _Protocol]
    ) -> _Protocol:
        host, port = node
        _, protocol = await loop.create_connection(factory, host, port, ssl=tls_context(self.target.tls))
        return protocol

    async def _handshake(self, protocol: _Protocol) -> bool:
        """Log in, check what the node is, select the db; True when the lookup must run again."""
        t = self.target
        futures = []
        if t.password is not None:
            auth = ("AUTH", t.username, t.password) if t.username else ("AUTH", t.password)
            futures.append(protocol.send(pack_command(auth)))
        futures.append(protocol.send(pack_command(("INFO", "server"))))
        futures.append(protocol.send(pack_command(("ROLE",))))
        replies = await wait_all(futures)
        if t.password is not None and isinstance(replies[0], Exception):
            raise RedisMisconfigured(f"Redis at {t.redacted} refused the credentials: {replies[0]}")
        for reply in replies:
            if isinstance(reply, Exception):
                if str(reply).startswith("NOAUTH"):
                    raise RedisMisconfigured(f"Redis at {t.redacted} needs a password: {reply}")
                raise RedisMisconfigured(f"Redis at {t.redacted} refused the handshake: {reply}")
        role = replies[-1][0] if isinstance(replies[-1], list) and replies[-1] else b""
        role = role.decode() if isinstance(role, bytes) else str(role)
        if self.locator.seen(parse_info(replies[-2]), role):
            self.target = self.locator.target
            return True
        if self.target.db:
            try:
                await protocol.send(pack_command(("SELECT", self.target.db)))
            except ResponseError as exc:
                raise RedisMisconfigured(
                    f"Redis at {t.redacted} refused db {self.target.db}: {exc}"
                ) from None
        return False

    async def command(self, node: tuple[str, int], tls: bool, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run `commands` on a short-lived connection to `node` (a Sentinel or a cluster seed)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(max(self.connect_timeout / 2, 0.1)):
            protocol = await self._dial(loop, node, lambda: _Protocol(loop))
            try:
                return await wait_all([protocol.send(pack_command(c)) for c in commands])
            finally:
                if protocol.transport is not None:
                    protocol.transport.close()


def open_transport(target: RedisTarget, *, slot_tag: str, connect_timeout: float = 2.0) -> Transport:
    """The transport for a parsed URL; nothing connects until the first call."""
    return PipelinedRedis(target, connect_timeout=connect_timeout, slot_tag=slot_tag)
