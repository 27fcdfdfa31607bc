"""Admission: ask the limiter, and map its refusal to a 429 (the only place that builds one).

A request is admitted against key + target + provider limits in one call when its first
provider is tried, and against the provider's own limits alone for every fallback after that
(key and target permits stay held). A provider that refuses is skipped like a busy one when it
is out of concurrency; when it is out of request or model tokens only if the target sets
fallback.on_rate_limit. Every other refusal ends the request.

Checks with a token limit reserve the request's estimate (metering), computed once; what the
limiter reports about the tightest buckets goes into the response headers.
"""

from __future__ import annotations

from onwards import errors
from onwards.config.model import Check, ConcurrencyCheck, FallbackSpec, TokenCheck
from onwards.errors import GatewayError
from onwards.limits.base import Decision, LimiterUnavailable
from onwards.proxy.exchange import Exchange
from onwards.proxy.plan import ProviderPlan
from onwards.tokens.headers import retry_headers


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
    meter = ex.meter
    tokens = 0
    if meter.limited and any(type(c) is TokenCheck for c in checks):
        tokens = meter.reserve(ex.request, ex.scope["path"])
    try:
        decision = await ex.gw.limiter.admit(checks, tokens)
    except LimiterUnavailable:
        outcome.limiter = "unavailable"
        raise GatewayError(503, errors.LIMITER_UNAVAILABLE, log="limiter unavailable, policy deny") from None
    if decision.allowed:
        outcome.limiter = "degraded" if decision.degraded else "allowed"
        if decision.lease is not None:
            ex.permits.hold(decision.lease)
        if decision.reservation is not None:
            ex.permits.reserve(decision.reservation)
        meter.admitted(decision)
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
    if isinstance(check, ConcurrencyCheck):
        return "concurrency"
    return "tokens" if isinstance(check, TokenCheck) else "rate"


def refusal(decision: Decision) -> GatewayError:
    """The 429 for a refused decision, per scope and kind: rate and tokens with retry-after and
    retry-after-ms when a wait helps (x-should-retry: false when none can), concurrency without."""
    refused = decision.refused
    assert refused is not None
    scope = refused.scope
    if isinstance(refused, ConcurrencyCheck):
        return GatewayError(429, errors.CONCURRENCY_LIMITED[scope], log=f"concurrency limit of {scope}")
    headers = retry_headers(decision.retry_after, decision.hopeless)
    if isinstance(refused, TokenCheck):
        if decision.hopeless:
            body, why = errors.TOKENS_TOO_LARGE[scope], f"estimate larger than the token limit of {scope}"
        else:
            body, why = errors.TOKENS_LIMITED[scope], f"token limit of {scope}"
        return GatewayError(429, body, headers, log=why)
    return GatewayError(429, errors.RATE_LIMITED[scope], headers, log=f"rate limit of {scope}")


def skips_provider(refused: Check, fallback: FallbackSpec) -> bool:
    """Whether a refusal moves on to the next provider instead of ending the request."""
    if refused.scope != "provider":
        return False
    # A provider at capacity is skipped like any busy provider; one out of request or model tokens
    # only when the target asks for that with fallback.on_rate_limit.
    if isinstance(refused, ConcurrencyCheck):
        return True
    return fallback.enabled and fallback.on_rate_limit
