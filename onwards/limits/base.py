"""The limiter interface the request path talks to.

A request is admitted against every check that applies to it (key, target and the chosen
provider) in one call, all-or-nothing: a refusal spends nothing anywhere. An admitted
request may hold concurrency permits; they are released in one call when the response
ends, and renewed while a long stream runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from onwards.config.model import Check, LimitsSettings


@dataclass(frozen=True, slots=True)
class Lease:
    """The concurrency permits one admission holds."""

    lease_id: str
    limiter_ids: tuple[str, ...]  # the concurrency checks that were acquired
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # Set when refused: the check that refused (its scope and kind go into the 429).
    refused: Check | None = None
    # Seconds until the refusing bucket has a token again; None for concurrency refusals.
    retry_after: float | None = None
    # Permits held (None when nothing needed one, or when Redis failed and policy allowed).
    lease: Lease | None = None
    # True when Redis could not be reached and the failure policy decided.
    degraded: bool = False


ALLOW = Decision(allowed=True)


class LimiterUnavailable(Exception):
    """The shared limiter cannot decide and the failure policy is `deny`."""


class Limiter(Protocol):
    async def start(self, settings: LimitsSettings) -> None: ...

    async def close(self) -> None: ...

    def configure(self, settings: LimitsSettings) -> None:
        """Apply new limiter settings from a reloaded config."""

    async def admit(self, checks: Sequence[Check]) -> Decision:
        """Admit against every check at once, or refuse spending nothing.

        Raises LimiterUnavailable when the backend is down and the policy is deny.
        """

    async def release(self, lease: Lease) -> None:
        """Return the permits of `lease`. Never raises."""

    def release_soon(self, lease: Lease) -> None:
        """Give back the permits of `lease` without waiting for an answer. Never raises.

        The release may be queued until the end of the current event-loop iteration, so the
        releases of many requests go out together; `releases_pending` says whether one is.
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
