"""Admission: each refusal kind maps to its own 429; only provider refusals move on to the next one."""

from __future__ import annotations

import types
from typing import Any

import orjson
import pytest

from onwards import errors
from onwards.config.model import ConcurrencyCheck, FallbackSpec, RateCheck, TokenCheck
from onwards.errors import GatewayError
from onwards.limits import MemoryLimiter
from onwards.limits.base import Decision
from onwards.proxy.admission import admit, refusal, skips_provider
from onwards.proxy.exchange import Outcome
from onwards.proxy.metering import Meter
from onwards.proxy.permits import Permits

SCOPES = ("key", "target", "provider")


@pytest.mark.parametrize("scope", SCOPES)
def test_a_rate_refusal_is_a_rate_limit_429_with_retry_after_rounded_up(scope: str) -> None:
    error = refusal(Decision(False, refused=RateCheck(scope, f"{scope}:x", 1, 1), retry_after=1.2))  # type: ignore[arg-type]
    assert error.status == 429
    assert error.body == errors.RATE_LIMITED[scope]
    assert orjson.loads(error.body)["error"]["code"] == "rate_limit"
    assert error.headers == ((b"retry-after", b"2"), (b"retry-after-ms", b"1200"))


def test_a_retry_after_under_a_second_says_one_and_an_unknown_one_is_left_out() -> None:
    check = RateCheck("key", "key:x", 1, 1)
    assert refusal(Decision(False, refused=check, retry_after=0.01)).headers == (
        (b"retry-after", b"1"),
        (b"retry-after-ms", b"10"),
    )
    assert refusal(Decision(False, refused=check, retry_after=None)).headers == ()


@pytest.mark.parametrize("scope", SCOPES)
def test_a_token_refusal_says_type_tokens_and_when_to_retry(scope: str) -> None:
    check = TokenCheck(scope, f"{scope}:x", 10.0, 600, 600)  # type: ignore[arg-type]
    error = refusal(Decision(False, refused=check, retry_after=2.5))
    assert error.status == 429
    assert error.body == errors.TOKENS_LIMITED[scope]
    body = orjson.loads(error.body)["error"]
    assert (body["type"], body["code"]) == ("tokens", "rate_limit")
    assert error.headers == ((b"retry-after", b"3"), (b"retry-after-ms", b"2500"))


def test_an_estimate_larger_than_the_bucket_says_do_not_retry() -> None:
    check = TokenCheck("target", "target:x", 10.0, 600, 600)  # type: ignore[arg-type]
    error = refusal(Decision(False, refused=check, hopeless=True))
    assert error.body == errors.TOKENS_TOO_LARGE["target"]
    assert orjson.loads(error.body)["error"]["type"] == "tokens"
    assert error.headers == ((b"x-should-retry", b"false"),)


@pytest.mark.parametrize("scope", SCOPES)
def test_a_concurrency_refusal_is_a_concurrency_429_without_retry_after(scope: str) -> None:
    error = refusal(Decision(False, refused=ConcurrencyCheck(scope, f"{scope}:x", 1)))  # type: ignore[arg-type]
    assert error.status == 429
    assert error.body == errors.CONCURRENCY_LIMITED[scope]
    assert orjson.loads(error.body)["error"]["code"] == "concurrency_limit_exceeded"
    assert error.headers == ()


def test_only_provider_refusals_can_skip_to_the_next_provider() -> None:
    on_rate = FallbackSpec(enabled=True, on_rate_limit=True)
    plain = FallbackSpec(enabled=True)
    off = FallbackSpec(enabled=False, on_rate_limit=True)
    for scope in ("key", "target"):
        assert not skips_provider(ConcurrencyCheck(scope, "x", 1), on_rate)  # type: ignore[arg-type]
        assert not skips_provider(RateCheck(scope, "x", 1, 1), on_rate)  # type: ignore[arg-type]
    # A provider at capacity is skipped whatever the fallback says.
    for fallback in (on_rate, plain, off):
        assert skips_provider(ConcurrencyCheck("provider", "x", 1), fallback)
    # A provider out of tokens only with fallback enabled and on_rate_limit.
    assert skips_provider(RateCheck("provider", "x", 1, 1), on_rate)
    assert not skips_provider(RateCheck("provider", "x", 1, 1), plain)
    assert not skips_provider(RateCheck("provider", "x", 1, 1), off)


class _Metrics:
    def __init__(self) -> None:
        self.rejected: list[tuple[str, str]] = []

    def limit_rejected(self, scope: str, kind: str) -> None:
        self.rejected.append((scope, kind))


def _exchange(
    limiter: MemoryLimiter, key_checks: tuple[Any, ...], target_checks: tuple[Any, ...], body: bytes = b""
) -> Any:
    target = types.SimpleNamespace(checks=target_checks, fallback=FallbackSpec(), default_max_tokens=100)
    request = types.SimpleNamespace(
        tplan=types.SimpleNamespace(target=target),
        keydef=types.SimpleNamespace(checks=key_checks),
        body=body,
        decoded=None,
    )
    gw = types.SimpleNamespace(limiter=limiter, metrics=_Metrics())
    permits = Permits(limiter, lambda coro: coro.close(), interval=10.0)
    limited = any(isinstance(c, TokenCheck) for c in (*key_checks, *target_checks))
    return types.SimpleNamespace(
        gw=gw,
        request=request,
        outcome=Outcome(),
        permits=permits,
        meter=Meter(limited),
        scope={"path": "/v1/chat/completions"},
    )


async def test_admit_holds_the_lease_and_a_fallback_admits_the_provider_alone() -> None:
    limiter = MemoryLimiter()
    key = ConcurrencyCheck("key", "key:k", 1)
    first = types.SimpleNamespace(checks=(ConcurrencyCheck("provider", "provider:a", 1),))
    second = types.SimpleNamespace(checks=(ConcurrencyCheck("provider", "provider:b", 1),))
    ex = _exchange(limiter, (key,), ())
    assert await admit(ex, first, base_admitted=False) is None
    assert ex.outcome.limiter == "allowed"
    assert [lease.limiter_ids for lease in ex.permits.leases] == [("key:k", "provider:a")]
    # With the key permit held, a second admission of the key would refuse: the fallback leaves it out.
    assert await admit(ex, second, base_admitted=True) is None
    assert [lease.limiter_ids for lease in ex.permits.leases] == [("key:k", "provider:a"), ("provider:b",)]
    ex.permits.close()


async def test_admit_refuses_a_key_limit_outright_and_skips_a_busy_provider() -> None:
    limiter = MemoryLimiter()
    key = ConcurrencyCheck("key", "key:k", 1)
    busy = ConcurrencyCheck("provider", "provider:a", 1)
    assert (await limiter.admit((key, busy))).allowed  # someone else holds both
    ex = _exchange(limiter, (key,), ())
    with pytest.raises(GatewayError) as raised:
        await admit(ex, types.SimpleNamespace(checks=()), base_admitted=False)
    assert raised.value.body == errors.CONCURRENCY_LIMITED["key"]
    assert ex.outcome.limiter == "refused:key:concurrency"
    ex = _exchange(limiter, (), ())
    skip = await admit(ex, types.SimpleNamespace(checks=(busy,)), base_admitted=False)
    assert skip is not None and skip.body == errors.CONCURRENCY_LIMITED["provider"]
    assert ex.gw.metrics.rejected == [("provider", "concurrency")]
    assert ex.permits.leases == []


async def test_admit_reserves_the_estimate_once_and_reports_the_headroom() -> None:
    limiter = MemoryLimiter()
    pool = TokenCheck("target", "target:t", 1 / 3600, 1_000, 1)  # type: ignore[arg-type]
    provider = TokenCheck("provider", "provider:a", 1 / 3600, 500, 1)  # type: ignore[arg-type]
    raw = orjson.dumps({"model": "m", "messages": [], "max_tokens": 20, "stream": True})
    ex = _exchange(limiter, (), (pool,), raw)
    assert await admit(ex, types.SimpleNamespace(checks=(provider,)), base_admitted=False) is None
    cost = -(-len(raw) // 4) + 20
    assert ex.meter.estimate == cost and ex.meter.ask_usage
    assert ex.request.decoded is not None  # parsed once, kept for a rewrite
    [reservation] = ex.permits.reservations
    assert reservation.tokens == cost and reservation.checks == (pool, provider)
    assert (ex.meter.tokens.limit, ex.meter.tokens.remaining) == (500, 500 - cost)
    # Settled to the usage on release: the pool gets back what was not used.
    ex.permits.settle_to(10)
    ex.permits.close()
    assert (await limiter.admit((pool,), 990)).allowed


async def test_a_request_without_token_limits_never_estimates() -> None:
    limiter = MemoryLimiter()
    ex = _exchange(limiter, (), (RateCheck("target", "target:t", 1, 5),), b"not json")
    assert await admit(ex, types.SimpleNamespace(checks=()), base_admitted=False) is None
    assert ex.meter.estimate is None and ex.permits.reservations == []
    assert ex.meter.requests.remaining == 4
    assert dict(ex.meter.headers())[b"x-ratelimit-remaining-requests"] == b"4"
