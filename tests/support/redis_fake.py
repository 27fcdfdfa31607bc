"""A limiter Transport over fakeredis: the production batched path, with Redis in-process.

The limiter hands this double the same packed RESP bytes it writes to a real socket. They are
parsed back into commands (a RESP request is an array of bulk strings, which hiredis reads like
any reply) and run in order on one fakeredis connection, and the raw reply is returned without
redis-py's per-command callbacks, as the real transport does. `server.connected = False` (a
fakeredis switch) makes every call fail with ConnectionError, like a Redis that went away.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import fakeredis
import hiredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError

from onwards.limits.redis.transport import pack_command


class FakeRedisTransport:
    def __init__(
        self, server: fakeredis.FakeServer | None = None, *, client: fakeredis.FakeAsyncRedis | None = None
    ) -> None:
        self.client = client or fakeredis.FakeAsyncRedis(server=server or fakeredis.FakeServer())
        self.on_change: Callable[[], None] | None = None
        self.on_connect: Callable[[Callable[[bytes], asyncio.Future[Any]]], None] | None = None
        self.connect_timeout = 2.0
        self.commands: list[str] = []  # the name of every command run, in order
        self.writes = 0  # calls of send_now / execute_packed: what would be socket writes
        self.connects = 0
        self._connection: Connection | None = None
        self._queue: collections.deque[tuple[list[bytes], asyncio.Future[Any]]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def send_now(self, commands: list[bytes]) -> list[asyncio.Future[Any]] | None:
        if self._connection is None:
            return None
        self.writes += 1
        return [self._enqueue(packed) for packed in commands]

    async def execute_packed(self, packed: bytes) -> Any:
        if self._connection is None:
            await self._connect()
        self.writes += 1
        return await self._enqueue(packed)

    async def execute_command(self, *args: Any) -> Any:
        return await self.execute_packed(pack_command(args))

    def abort(self) -> None:
        self._lost(ConnectionError("Redis connection reset by the limiter"))

    def redirected(self, exc: Exception) -> None:
        self.abort()

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def stuck_for(self) -> float:
        return 0.0

    async def check_owner(self) -> None:
        return None

    async def aclose(self) -> None:
        self._closed = True
        self._lost(ConnectionError("Redis client closed"))
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
        await self.client.aclose()

    async def _connect(self) -> None:
        if self._closed:
            raise ConnectionError("transport closed")
        connection: Connection = await self.client.connection_pool.get_connection()  # type: ignore[assignment]
        try:
            await connection.send_command("PING")
            await connection.read_response()
        except BaseException:
            await self.client.connection_pool.release(connection)
            raise
        if self._connection is None:
            self._connection = connection
            self.connects += 1
            if self.on_connect is not None:
                self.on_connect(self._enqueue)
            if self.on_change is not None:
                self.on_change()
        else:
            await self.client.connection_pool.release(connection)

    def _enqueue(self, packed: bytes) -> asyncio.Future[Any]:
        reader = hiredis.Reader()
        reader.feed(packed)
        args = reader.gets()
        assert isinstance(args, list) and reader.gets() is False, "one packed command expected"
        future = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return future

    async def _run(self) -> None:
        while self._queue:
            args, future = self._queue.popleft()
            connection = self._connection
            if connection is None:
                if not future.done():
                    future.set_exception(ConnectionError("Redis connection lost"))
                continue
            self.commands.append(args[0].decode().upper())
            try:
                await connection.send_command(*args)
                reply = await connection.read_response()
            except ConnectionError as exc:
                if not future.done():
                    future.set_exception(exc)
                self._lost(exc)
            except Exception as exc:  # an error reply: this command only
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(reply)

    def _lost(self, exc: Exception) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            asyncio.get_running_loop().create_task(self.client.connection_pool.release(connection))
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(exc)
