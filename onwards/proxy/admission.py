"""Admission: ask the limiter, and map its refusal to a 429 (the only place that builds one).

A request is admitted against key + target + provider limits in one call when its first
provider is tried, and against the provider's own limits alone for every fallback after that
(key and target permits stay held). A provider that refuses is skipped like a busy one when it
is out of concurrency; when it is out of tokens only if the target sets fallback.on_rate_limit.
Every other refusal ends the request.
"""

from __future__ import annotations

import math

from onwards import errors
from onwards.config.model import Check, ConcurrencyCheck, FallbackSpec
from onwards.errors import GatewayError
from onwards.limits.base import Decision, LimiterUnavailable
from onwards.proxy.exchange import Exchange
from onwards.proxy.plan import ProviderPlan


async def admit(ex: Exchange, pplan: ProviderPlan, base_admitted: bool) -> GatewayError | None:
    """Admit `ex` for trying `pplan`; its permits go to `ex.permits`.

    Returns None when admitted, the 429 to try the next provider with when this provider is to be
    skipped, and raises the error that refuses the request outright.
    """
    if base_admitted:
        checks = pplan.checks
    else:
        target_checks = ex.request.tplan.target.checks
        keydef = ex.request.keydef
        base = target_checks if keydef is None else keydef.checks + target_checks
        checks = base + pplan.checks
    if not checks:
        return None
    outcome = ex.outcome
    try:
        decision = await ex.gw.limiter.admit(checks)
    except LimiterUnavailable:
        outcome.limiter = "unavailable"
        raise GatewayError(503, errors.LIMITER_UNAVAILABLE, log="limiter unavailable, policy deny") from None
    if decision.allowed:
        outcome.limiter = "degraded" if decision.degraded else "allowed"
        if decision.lease is not None:
            ex.permits.hold(decision.lease)
        return None
    refused = decision.refused
    assert refused is not None  # a refusal always names its check
    kind = refusal_kind(refused)
    outcome.limiter = f"refused:{refused.scope}:{kind}"
    ex.gw.metrics.limit_rejected(refused.scope, kind)
    error = refusal(decision)
    if skips_provider(refused, ex.request.tplan.target.fallback):
        return error
    raise error


def refusal_kind(check: Check) -> str:
    return "concurrency" if isinstance(check, ConcurrencyCheck) else "rate"


def refusal(decision: Decision) -> GatewayError:
    """The 429 for a refused decision: rate (with Retry-After when known) or concurrency, per scope."""
    refused = decision.refused
    assert refused is not None
    scope = refused.scope
    if isinstance(refused, ConcurrencyCheck):
        return GatewayError(429, errors.CONCURRENCY_LIMITED[scope], log=f"concurrency limit of {scope}")
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if decision.retry_after is not None:
        headers = ((b"retry-after", str(max(1, math.ceil(decision.retry_after))).encode()),)
    return GatewayError(429, errors.RATE_LIMITED[scope], headers, log=f"rate limit of {scope}")


def skips_provider(refused: Check, fallback: FallbackSpec) -> bool:
    """Whether a refusal moves on to the next provider instead of ending the request."""
    if refused.scope != "provider":
        return False
    # A provider at capacity is skipped like any busy provider; one out of tokens only when the
    # target asks for that with fallback.on_rate_limit.
    if isinstance(refused, ConcurrencyCheck):
        return True
    return fallback.enabled and fallback.on_rate_limit
