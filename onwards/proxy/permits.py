"""Permits: the one owner of a request's concurrency leases and token reservations, from
admission to release.

- Renewal: a lease is renewed every `interval` seconds while the request runs. Nearly every
  request ends long before its first renewal, so none gets a timer at admission: the disconnect
  watch, which every longer request reaches first, arms it (`watch_started`).
- A failed provider's own permits go back when the next provider is tried; key and target
  permits stay held.
- Everything goes back before the client can see the last byte (`release_before_end`), so a
  client that sends its next request at once never finds its own permit still held; `close`
  returns whatever is left on every other way out.
- Token reservations are settled with the release, in the same limiter call: to the usage the
  response reported (`settle_to`), or, when it reported none, not at all: the reservation stays
  spent and `unsettled` says so. A failed provider's own reservation is kept the same way (its
  usage is unknown); the key's and target's go on to the next provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from onwards.limits.base import Lease, Limiter, Reservation
from onwards.proxy.watch import DISCONNECT_WATCH_DELAY


class Permits:
    __slots__ = (
        "due",
        "interval",
        "leases",
        "limiter",
        "reservations",
        "spawn",
        "timer",
        "unsettled",
        "used",
        "watching",
    )

    def __init__(
        self, limiter: Limiter, spawn: Callable[[Coroutine[Any, Any, Any]], None], interval: float
    ) -> None:
        self.limiter = limiter
        self.spawn = spawn  # runs a renewal in the background, keeping a reference to it
        self.interval = interval  # seconds between renewals, from the request's config
        self.leases: list[Lease] = []
        self.timer: asyncio.TimerHandle | None = None
        self.due: float | None = None  # the interval of a renewal not yet scheduled
        self.watching = False
        self.reservations: list[Reservation] = []
        self.used: int | None = None  # tokens the response reported; None until it did
        self.unsettled = False  # a reservation was kept for want of usage

    def reserve(self, reservation: Reservation) -> None:
        """Take ownership of admitted token reservations."""
        self.reservations.append(reservation)

    def settle_to(self, used: int) -> None:
        """The response reported `used` tokens: the reservations settle to that on release."""
        self.used = used

    def hold(self, lease: Lease) -> None:
        """Take ownership of an admitted lease."""
        self.leases.append(lease)
        if self.timer is not None or self.due is not None:
            return
        interval = self.interval
        if interval <= DISCONNECT_WATCH_DELAY or self.watching:
            self.timer = asyncio.get_running_loop().call_later(interval, self._renew)
        else:
            # Left to the disconnect watch, which every longer request reaches first (after
            # DISCONNECT_WATCH_DELAY, or when a stream starts).
            self.due = interval

    def watch_started(self) -> None:
        """The disconnect watch runs: a deferred renewal gets its timer now."""
        self.watching = True
        if self.due is not None and self.timer is None:
            # Counted from now less the watch delay: at most that much early (when a stream starts
            # sooner), never late.
            self.timer = asyncio.get_running_loop().call_later(self.due - DISCONNECT_WATCH_DELAY, self._renew)

    def _renew(self) -> None:
        for lease in self.leases:
            self.spawn(self.limiter.renew(lease))
        self.timer = asyncio.get_running_loop().call_later(self.interval, self._renew)

    def release_all(self) -> None:
        if self.reservations:
            # Queued before the releases: both go out in the limiter's next call.
            self._settle()
        leases, self.leases = self.leases, []
        release = self.limiter.release_soon
        for lease in leases:
            release(lease)

    def _settle(self) -> None:
        reservations, self.reservations = self.reservations, []
        used = self.used
        if used is None:
            self.unsettled = True
            return
        settle = self.limiter.settle_soon
        for reservation in reservations:
            settle(reservation, used)

    async def release_before_end(self) -> None:
        """Give every permit back before the caller sends the last byte of a response.

        Not awaited: the response does not wait a round trip for the answer.
        """
        self.release_all()
        if self.limiter.releases_pending:
            # The limiter writes its queued releases when this loop iteration ends; yielding
            # once lets that write go first.
            await asyncio.sleep(0)

    def release_provider(self, own: frozenset[str], own_tokens: frozenset[str] = frozenset()) -> None:
        """Give back a failed provider's own permits (limiter ids `own`); the rest stay held.

        Its own token reservations (limiter ids `own_tokens`) are kept spent: what it used is unknown.
        """
        if own_tokens and self.reservations:
            self._keep_provider_tokens(own_tokens)
        if not own or not self.leases:
            return
        kept: list[Lease] = []
        release = self.limiter.release_soon
        for lease in self.leases:
            mine = tuple(i for i in lease.limiter_ids if i in own)
            if not mine:
                kept.append(lease)
                continue
            release(Lease(lease.lease_id, mine, lease.ttl_ms))
            rest = tuple(i for i in lease.limiter_ids if i not in own)
            if rest:
                kept.append(Lease(lease.lease_id, rest, lease.ttl_ms))
        self.leases = kept

    def _keep_provider_tokens(self, own: frozenset[str]) -> None:
        kept: list[Reservation] = []
        for reservation in self.reservations:
            rest = tuple(c for c in reservation.checks if c.limiter_id not in own)
            if len(rest) != len(reservation.checks):
                self.unsettled = True
            if rest:
                kept.append(
                    reservation
                    if len(rest) == len(reservation.checks)
                    else Reservation(rest, reservation.tokens)
                )
        self.reservations = kept

    def close(self) -> None:
        """The request is over: stop renewing and return what is still held."""
        if self.timer is not None:
            self.timer.cancel()
        if self.leases or self.reservations:
            self.release_all()
