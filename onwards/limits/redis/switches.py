"""Sentinel's `+switch-master` notices: the moment a failover picks a new master, drop the old one.

After a failover the old master may accept writes for a moment before it is turned into a replica;
what lands there is lost. A worker subscribed to its Sentinels' switch notices drops its connection
the moment the switch is announced, so its next call goes to the new master, where the greeting of
recovery.py puts its held leases back and repeats its recent releases. One small task per worker
(Sentinel topology only), one connection to one Sentinel at a time, retried every RETRY_S.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import hiredis

from onwards.limits.redis.locate import tls_context
from onwards.limits.redis.url import RedisTarget

log = logging.getLogger("onwards.limits")

RETRY_S = 0.5
_CHANNEL = b"+switch-master"


def _pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class SwitchWatch:
    def __init__(self, target: RedisTarget, on_switch: Callable[[], None], timeout: float) -> None:
        self._target = target
        self._on_switch = on_switch
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sentinel switch watch")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        index = 0
        while True:
            node = self._target.nodes[index % len(self._target.nodes)]
            try:
                await self._follow(node)
            except (OSError, ConnectionError, TimeoutError, hiredis.ProtocolError) as exc:
                log.debug("Sentinel switch watch on %s:%s: %r", node[0], node[1], exc)
            index += 1
            await asyncio.sleep(RETRY_S)

    async def _follow(self, node: tuple[str, int]) -> None:
        t = self._target
        async with asyncio.timeout(self._timeout):
            reader, writer = await asyncio.open_connection(node[0], node[1], ssl=tls_context(t.tls))
        try:
            if t.sentinel_password is not None:
                auth = [t.sentinel_username.encode()] if t.sentinel_username else []
                writer.write(_pack(b"AUTH", *auth, t.sentinel_password.encode()))
            writer.write(_pack(b"SUBSCRIBE", _CHANNEL))
            parser = hiredis.Reader()
            service = (t.service or "").encode()
            while data := await reader.read(65536):
                parser.feed(data)
                while (message := parser.gets()) is not False:
                    # ["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]
                    if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                        fields = message[2].split()
                        if fields and fields[0] == service:
                            log.info("Sentinel switched the master of %r: %s", t.service, message[2].decode())
                            self._on_switch()
            raise ConnectionError("Sentinel closed the connection")
        finally:
            writer.close()
