"""The disconnect watch: a client that leaves cancels its request's task; starting it arms renewal."""

from __future__ import annotations

import asyncio
from typing import Any

from onwards.limits.base import Lease
from onwards.proxy.permits import Permits
from onwards.proxy.watch import DisconnectWatch
from tests.unit.test_proxy_permits import FakeLimiter


async def test_a_disconnect_cancels_the_watched_task_and_says_so() -> None:
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    watching = asyncio.Event()
    watches: list[DisconnectWatch] = []

    async def request() -> None:
        permits = Permits(FakeLimiter(), lambda coro: None, 10.0)  # type: ignore[arg-type]
        watch = DisconnectWatch(messages.get, permits)
        watches.append(watch)
        watch.start()
        watching.set()
        try:
            await asyncio.Event().wait()  # an upstream that never answers
        finally:
            watch.stop()

    task = asyncio.create_task(request())
    await asyncio.wait_for(watching.wait(), 10)
    await messages.put({"type": "http.request", "body": b"", "more_body": False})
    await messages.put({"type": "http.disconnect"})
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done and task.cancelled()
    assert watches[0].disconnected


async def test_starting_arms_a_deferred_renewal_and_stop_cancels_the_delayed_start() -> None:
    permits = Permits(FakeLimiter(), lambda coro: None, 10.0)  # type: ignore[arg-type]
    never: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        return await never

    watch = DisconnectWatch(receive, permits)
    permits.hold(Lease("L1", ("key:k",), 30_000))
    assert permits.timer is None
    watch.start()
    assert permits.timer is not None
    assert watch.task is not None
    watch.stop()
    permits.close()
    assert watch.timer is not None and watch.timer.cancelled()
    await asyncio.wait({watch.task}, timeout=10)
    assert watch.task.cancelled()
    assert not watch.disconnected
