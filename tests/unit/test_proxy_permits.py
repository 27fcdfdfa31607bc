"""Permits: a failed provider gives back only its own permits; renewal waits for the disconnect
watch; everything goes back before the last byte, after one yield when the limiter queued it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from onwards.config.model import TokenCheck
from onwards.limits.base import Lease, Reservation
from onwards.proxy.permits import Permits
from onwards.proxy.watch import DISCONNECT_WATCH_DELAY


class FakeLimiter:
    def __init__(self, queues: bool = False) -> None:
        self.released: list[Lease] = []
        self.renewed: list[Lease] = []
        self.settled: list[tuple[Reservation, int]] = []
        self.queues = queues
        self.written: list[Lease] = []  # what a queued write has sent
        self._flush: asyncio.Handle | None = None

    def release_soon(self, lease: Lease) -> None:
        self.released.append(lease)
        if self.queues and self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self.written = list(self.released)
        self._flush = None

    @property
    def releases_pending(self) -> bool:
        return self._flush is not None

    async def renew(self, lease: Lease) -> None:
        self.renewed.append(lease)

    def settle_soon(self, reservation: Reservation, used: int) -> None:
        self.settled.append((reservation, used))


def _permits(limiter: FakeLimiter, interval: float = 10.0) -> tuple[Permits, list[Coroutine[Any, Any, Any]]]:
    spawned: list[Coroutine[Any, Any, Any]] = []
    return Permits(limiter, spawned.append, interval), spawned  # type: ignore[arg-type]


async def test_a_failed_provider_releases_its_own_permits_only() -> None:
    limiter = FakeLimiter()
    permits, _ = _permits(limiter)
    permits.hold(Lease("L1", ("key:k", "target:t", "provider:a"), 30_000))
    permits.hold(Lease("L2", ("provider:b",), 30_000))
    permits.release_provider(frozenset({"provider:a"}))
    assert limiter.released == [Lease("L1", ("provider:a",), 30_000)]
    assert permits.leases == [
        Lease("L1", ("key:k", "target:t"), 30_000),
        Lease("L2", ("provider:b",), 30_000),
    ]
    permits.release_provider(frozenset({"provider:b"}))
    assert limiter.released[-1] == Lease("L2", ("provider:b",), 30_000)
    assert permits.leases == [Lease("L1", ("key:k", "target:t"), 30_000)]
    # A provider without semaphores of its own releases nothing.
    permits.release_provider(frozenset())
    assert len(limiter.released) == 2
    permits.close()
    assert limiter.released[-1] == Lease("L1", ("key:k", "target:t"), 30_000)
    assert permits.leases == []


async def test_renewal_is_left_to_the_watch_and_armed_when_it_starts() -> None:
    limiter = FakeLimiter()
    permits, _ = _permits(limiter, interval=10.0)
    permits.hold(Lease("L1", ("key:k",), 30_000))
    assert permits.timer is None and permits.due == 10.0
    permits.watch_started()
    assert permits.timer is not None
    loop = asyncio.get_running_loop()
    # Counted from the watch's start less its delay: never late.
    assert permits.timer.when() - loop.time() <= 10.0 - DISCONNECT_WATCH_DELAY + 0.001
    first = permits.timer
    permits.watch_started()
    assert permits.timer is first  # armed once
    permits.close()
    assert first.cancelled()


async def test_a_short_interval_or_a_running_watch_schedules_at_once() -> None:
    permits, _ = _permits(FakeLimiter(), interval=DISCONNECT_WATCH_DELAY / 2)
    permits.hold(Lease("L1", ("key:k",), 300))
    assert permits.timer is not None and permits.due is None
    permits.close()
    permits, _ = _permits(FakeLimiter(), interval=10.0)
    permits.watch_started()
    permits.hold(Lease("L1", ("key:k",), 30_000))
    assert permits.timer is not None
    permits.close()


async def test_a_renewal_renews_every_held_lease_and_schedules_the_next() -> None:
    limiter = FakeLimiter()
    permits, spawned = _permits(limiter, interval=DISCONNECT_WATCH_DELAY / 2)
    permits.hold(Lease("L1", ("key:k",), 300))
    permits.hold(Lease("L2", ("provider:a",), 300))
    first = permits.timer
    permits._renew()  # what the timer runs
    for coro in spawned:
        await coro
    assert [lease.lease_id for lease in limiter.renewed] == ["L1", "L2"]
    assert permits.timer is not first and permits.timer is not None
    permits.close()
    assert permits.timer.cancelled()


async def test_release_before_end_yields_once_so_a_queued_release_is_written_first() -> None:
    limiter = FakeLimiter(queues=True)
    permits, _ = _permits(limiter)
    permits.hold(Lease("L1", ("key:k",), 30_000))
    await permits.release_before_end()
    assert limiter.written == [Lease("L1", ("key:k",), 30_000)]
    assert permits.leases == []
    # Nothing left: closing releases nothing twice.
    permits.close()
    assert len(limiter.released) == 1


KEY_TOKENS = TokenCheck("key", "key:k", 1.0, 1000, 60)  # type: ignore[arg-type]
P0_TOKENS = TokenCheck("provider", "provider:a:0", 1.0, 1000, 60)  # type: ignore[arg-type]
P1_TOKENS = TokenCheck("provider", "provider:a:1", 1.0, 1000, 60)  # type: ignore[arg-type]


async def test_reservations_settle_to_the_reported_usage_with_the_release() -> None:
    limiter = FakeLimiter()
    permits, _ = _permits(limiter)
    permits.hold(Lease("l1", ("key:k",), 30_000))
    permits.reserve(Reservation((KEY_TOKENS,), 300))
    permits.settle_to(42)
    await permits.release_before_end()
    assert limiter.settled == [(Reservation((KEY_TOKENS,), 300), 42)]
    assert [lease.lease_id for lease in limiter.released] == ["l1"]
    assert not permits.unsettled
    permits.close()
    assert len(limiter.settled) == 1  # settled once


async def test_without_usage_the_reservation_is_kept_and_marked_unsettled() -> None:
    limiter = FakeLimiter()
    permits, _ = _permits(limiter)
    permits.reserve(Reservation((KEY_TOKENS,), 300))
    permits.close()
    assert limiter.settled == [] and permits.unsettled


async def test_a_failed_providers_own_reservation_is_kept_the_rest_goes_on() -> None:
    limiter = FakeLimiter()
    permits, _ = _permits(limiter)
    permits.reserve(Reservation((KEY_TOKENS, P0_TOKENS), 300))
    permits.release_provider(frozenset(), frozenset({"provider:a:0"}))
    permits.reserve(Reservation((P1_TOKENS,), 300))
    permits.settle_to(50)
    permits.close()
    assert limiter.settled == [(Reservation((KEY_TOKENS,), 300), 50), (Reservation((P1_TOKENS,), 300), 50)]
    assert permits.unsettled  # provider 0's tokens stay spent, and are counted
