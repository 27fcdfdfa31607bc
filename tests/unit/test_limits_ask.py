"""The limiter's answers to a cluster slot migration, over fakeredis: ASK and TRYAGAIN.

`Migrating` is the owner of the slot: for the script calls it is told to, it answers ASK (the
keys are on the importing node, a second fakeredis server) or TRYAGAIN, as a migrating Redis
Cluster node does. The importing node starts without the scripts, as a real one may. The real
cluster case is tests/integration/test_redis_topologies.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis

from onwards.config.model import ConcurrencyCheck, LimitsSettings
from onwards.limits import RedisLimiter
from onwards.limits.redis.errors import AskRedirect, TryAgainError
from tests.support.redis_fake import FakeRedisTransport

SEMAPHORE = ConcurrencyCheck("key", "key:ask", 2)
IMPORTING = ("127.0.0.1", 7001)


class Migrating(FakeRedisTransport):
    def __init__(self) -> None:
        super().__init__(fakeredis.FakeServer())
        self.importing = FakeRedisTransport(fakeredis.FakeServer())
        self.ask = False  # answer ASK to every script call
        self.tryagain = 0  # answer TRYAGAIN to this many script calls (here or on the importing node)
        self.asked: list[bytes] = []  # the commands sent with ASKING, by name

    def _refuse(self, packed: bytes) -> BaseException | None:
        if not packed.startswith(b"*") or b"EVALSHA" not in packed[:20]:
            return None
        if self.tryagain:
            self.tryagain -= 1
            return TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot")
        if self.ask:
            return AskRedirect("ASK 1234 127.0.0.1:7001")
        return None

    def send_now(self, commands: list[bytes]) -> list[asyncio.Future[Any]] | None:
        if self._connection is None:
            return None
        self.writes += 1
        loop = asyncio.get_running_loop()
        futures = []
        for packed in commands:
            refused = self._refuse(packed)
            if refused is None:
                futures.append(self._enqueue(packed))
            else:  # not run here, as on the migrating node
                futures.append(loop.create_future())
                futures[-1].set_exception(refused)
        return futures

    async def execute_packed(self, packed: bytes) -> Any:
        refused = self._refuse(packed)
        if refused is not None:
            raise refused
        return await super().execute_packed(packed)

    async def asking(self, node: tuple[str, int], packed: bytes) -> Any:
        assert node == IMPORTING
        self.asked.append(packed.split(b"\r\n")[2])
        if self.tryagain and b"EVALSHA" in packed[:20]:
            self.tryagain -= 1
            raise TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot")
        return await self.importing.execute_packed(packed)


async def started(transport: Migrating) -> RedisLimiter:
    limiter = RedisLimiter(settings=LimitsSettings(redis_timeout_ms=5000), transport=transport)
    # A generous timeout: a safety net only, so a busy machine cannot turn a repeat into the policy.
    await limiter.start(LimitsSettings(redis_timeout_ms=5000))
    return limiter


async def test_an_ask_sends_the_batch_to_the_importing_node_after_loading_its_scripts() -> None:
    transport = Migrating()
    limiter = await started(transport)
    try:
        transport.ask = True
        decisions = [await limiter.admit((SEMAPHORE,)) for _ in range(3)]
        assert [(d.allowed, d.degraded) for d in decisions] == [(True, False)] * 2 + [(False, False)]
        # The first EVALSHA there got NOSCRIPT: the scripts were loaded there and it went again.
        assert transport.asked[:2] == [b"EVALSHA", b"SCRIPT"] and b"EVALSHA" in transport.asked[2:]
        semaphore = limiter.keys.semaphore(SEMAPHORE.limiter_id)
        assert await transport.importing.client.zcard(semaphore) == 2
        assert await transport.client.zcard(semaphore) == 0  # nothing ran on the owner
        # Releases take the same way: the permit is back on the importing node.
        lease = decisions[0].lease
        assert lease is not None
        limiter.release_soon(lease)
        for _ in range(100):
            if await transport.importing.client.zcard(semaphore) == 1:
                break
            await asyncio.sleep(0.01)
        assert await transport.importing.client.zcard(semaphore) == 1
        assert limiter.state == "closed"
    finally:
        await limiter.close()
        await transport.importing.aclose()


async def test_tryagain_is_repeated_once_then_gets_the_policy_without_opening_the_circuit() -> None:
    transport = Migrating()
    limiter = await started(transport)
    try:
        transport.tryagain = 1
        first = await limiter.admit((SEMAPHORE,))
        assert (first.allowed, first.degraded) == (True, False)  # the repeat after the pause ran
        transport.tryagain = 2
        second = await limiter.admit((SEMAPHORE,))
        assert (second.allowed, second.degraded, second.lease) == (True, True, None)
        assert limiter.state == "closed"
        third = await limiter.admit((SEMAPHORE,))
        assert (third.allowed, third.degraded) == (True, False)
        fourth = await limiter.admit((SEMAPHORE,))
        assert (fourth.allowed, fourth.degraded) == (False, False)  # exact: 2 permits taken
        # ASK, then TRYAGAIN on the importing node: repeated there once after the pause.
        transport.ask, transport.tryagain = True, 1
        on_importing = await limiter.admit((SEMAPHORE,))
        assert (on_importing.allowed, on_importing.degraded) == (True, False)
    finally:
        await limiter.close()
        await transport.importing.aclose()
