"""The limiter interface the request path talks to.

A request is admitted against every check that applies to it (key, target and the chosen
provider) in one call, all-or-nothing: a refusal spends nothing anywhere. An admitted
request may hold concurrency permits; they are released in one call when the response
ends, and renewed while a long stream runs. A request with token limits reserves its
estimate from each token bucket at admission and settles it to the usage the provider
reported when the response ends, in the same call as the release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from onwards.config.model import Check, LimitsSettings, TokenCheck


@dataclass(frozen=True, slots=True)
class Lease:
    """The concurrency permits one admission holds."""

    lease_id: str
    limiter_ids: tuple[str, ...]  # the concurrency checks that were acquired
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """Model tokens one admission took from each of its token buckets, to settle later."""

    checks: tuple[TokenCheck, ...]
    tokens: int


class Headroom(NamedTuple):
    """What the tightest bucket of one kind has left after an admission (x-ratelimit-* headers).

    A tuple rather than a dataclass: one or two are made for every admitted request.
    """

    limit: int  # the bucket's burst: what it holds when full
    remaining: int  # whole units left, never below zero
    reset_s: float  # until it is full again


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # Set when refused: the check that refused (its scope and kind go into the 429).
    refused: Check | None = None
    # Seconds until the refusing bucket could admit the request; None for concurrency refusals
    # and for a token estimate larger than the bucket's whole burst (see hopeless).
    retry_after: float | None = None
    # Permits held (None when nothing needed one, or when Redis failed and policy allowed).
    lease: Lease | None = None
    # True when Redis could not be reached and the failure policy decided.
    degraded: bool = False
    # Refused by a token bucket that can never hold the request's estimate: waiting cannot help.
    hopeless: bool = False
    # The tokens reserved (None when no token check applied, or degraded).
    reservation: Reservation | None = None
    # The tightest request bucket and token bucket after this admission (None: none applied).
    requests: Headroom | None = None
    tokens: Headroom | None = None


ALLOW = Decision(allowed=True)


class LimiterUnavailable(Exception):
    """The shared limiter cannot decide and the failure policy is `deny`."""


class Limiter(Protocol):
    async def start(self, settings: LimitsSettings) -> None: ...

    async def close(self) -> None: ...

    def configure(self, settings: LimitsSettings) -> None:
        """Apply new limiter settings from a reloaded config."""

    async def admit(self, checks: Sequence[Check], tokens: int = 0) -> Decision:
        """Admit against every check at once, or refuse spending nothing.

        `tokens` is the request's estimate: what it takes from each TokenCheck (a RateCheck
        takes 1). Raises LimiterUnavailable when the backend is down and the policy is deny.
        """

    async def release(self, lease: Lease) -> None:
        """Return the permits of `lease`. Never raises."""

    def release_soon(self, lease: Lease) -> None:
        """Give back the permits of `lease` without waiting for an answer. Never raises.

        The release may be queued until the end of the current event-loop iteration, so the
        releases of many requests go out together; `releases_pending` says whether one is.
        """

    def settle_soon(self, reservation: Reservation, used: int) -> None:
        """Settle `reservation` to the `used` tokens: refund the rest, or charge beyond it.

        Queued like release_soon and sent in the same call as the releases of this loop
        iteration. Never raises; a settlement that cannot reach the backend is lost and the
        reservation stays spent (it refills at the bucket's rate).
        """

    @property
    def releases_pending(self) -> bool:
        """True while a release handed to `release_soon` waits for the end of this loop iteration.

        The request path then yields once (``await asyncio.sleep(0)``) before it sends the last
        byte of a response: the queued write runs first, so the release has left before the
        client can see the end, and a client that comes straight back finds its permit free.
        """

    async def renew(self, lease: Lease) -> None:
        """Extend the permits of a long-running request. Never raises."""

    @property
    def healthy(self) -> bool:
        """False while the backend is failing (circuit open)."""

    @property
    def description(self) -> str:
        """Human words for logs and /ready: which backend, per process or shared."""

    @property
    def problem(self) -> str | None:
        """A misconfiguration the backend reported (one line, for /ready), or None."""
