"""The compiled routing table: per target and provider, everything the request path needs,
encoded once when a config snapshot becomes active."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import aiohttp

from onwards.config.model import Check, ConcurrencyCheck, Provider, Snapshot, Target, TokenCheck
from onwards.convert.adapters import Adapter, adapters_for
from onwards.edge.egress import EgressEnv
from onwards.mock_provider import MockProvider
from onwards.responses.plan import ResponsesPlan, compile_responses

# The session's connect timeout, repeated here: a per-request ClientTimeout replaces the session's.
CONNECT_TIMEOUT_S = 30

# Sent to Anthropic-format providers when the client sent no anthropic-version of its own.
ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    provider: Provider
    url: str  # ends with "/"
    # The provider url's path without slashes ("v1"), stripped from request paths that repeat it.
    dedupe: str
    auth: tuple[str, str] | None
    # Pool headers then provider headers (provider wins), names lower-cased, as ASGI wants them.
    response_headers: tuple[tuple[bytes, bytes], ...]
    overridden: frozenset[bytes]
    checks: tuple[Check, ...]
    concurrency_ids: frozenset[str]  # limiter ids of this provider's own semaphores
    token_ids: frozenset[str]  # limiter ids of this provider's own token buckets
    sanitize: bool
    timeout: float | None
    label: str
    # The egress proxy connections to this provider go through; None: direct.
    proxy: str | None = None
    # sock_read is the stream idle timeout: the longest gap between two chunks of the response.
    client_timeout: aiohttp.ClientTimeout | None = None
    # Client protocol -> the adapter that converts it for this provider; absent protocols pass through.
    adapters: dict[str, Adapter] = field(default_factory=dict)
    anthropic: bool = False  # the provider speaks Anthropic Messages
    # A `mock://` provider, answered in this process instead of over a connection.
    mock: MockProvider | None = None


@dataclass(frozen=True, slots=True)
class TargetPlan:
    target: Target
    providers: tuple[ProviderPlan, ...]  # by Provider.index
    responses: ResponsesPlan | None = None  # set when /v1/responses goes through the adapter
    # A token limit on the target or on any of its providers: requests may need an estimate.
    token_limited: bool = False


@dataclass(frozen=True, slots=True)
class ActiveConfig:
    """A snapshot and its compiled plan, swapped together as one reference."""

    snapshot: Snapshot
    targets: dict[str, TargetPlan]
    # Seconds between renewals of a request's concurrency leases: a third of their ttl at most.
    renew_interval_s: float
    # Names of the key definitions that carry a token limit.
    token_keys: frozenset[str] = frozenset()


def _merge_headers(
    pool: tuple[tuple[str, str], ...], provider: tuple[tuple[str, str], ...]
) -> tuple[tuple[bytes, bytes], ...]:
    merged: dict[bytes, bytes] = {}
    for name, value in (*pool, *provider):
        merged[name.lower().encode("latin-1")] = value.encode("latin-1")
    return tuple(merged.items())


def _provider_plan(target: Target, provider: Provider, egress: EgressEnv) -> ProviderPlan:
    headers = _merge_headers(target.response_headers, provider.response_headers)
    return ProviderPlan(
        provider=provider,
        url=provider.url,
        dedupe=provider.base_path.strip("/"),
        auth=provider.auth_header,
        response_headers=headers,
        overridden=frozenset(name for name, _ in headers),
        checks=provider.checks,
        concurrency_ids=frozenset(c.limiter_id for c in provider.checks if isinstance(c, ConcurrencyCheck)),
        token_ids=frozenset(c.limiter_id for c in provider.checks if isinstance(c, TokenCheck)),
        sanitize=provider.sanitize_response or target.sanitize_response,
        timeout=provider.request_timeout_secs,
        label=provider.label,
        proxy=egress.proxy_for(provider.url, provider.proxy),
        client_timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=provider.stream_idle_timeout_secs
        ),
        adapters=adapters_for(provider.format),
        anthropic=provider.format == "anthropic",
        mock=None
        if provider.mock is None
        else MockProvider(provider.mock, provider.onwards_model or target.alias),
    )


def compile_config(snapshot: Snapshot, environ: dict[str, str] | None = None) -> ActiveConfig:
    # The proxy variables are read once per config, not per request.
    egress = EgressEnv.from_environ(os.environ if environ is None else environ)
    targets: dict[str, TargetPlan] = {}
    for alias, target in snapshot.targets.items():
        plans = tuple(_provider_plan(target, p, egress) for p in target.providers)
        limited = _has_tokens(target.checks) or any(p.token_ids for p in plans)
        targets[alias] = TargetPlan(
            target=target, providers=plans, responses=compile_responses(target), token_limited=limited
        )
    limits = snapshot.limits
    renew_interval_s = min(limits.renew_interval_ms, limits.lease_ttl_ms / 3) / 1000
    token_keys = frozenset(k.name for k in snapshot.keys_by_token.values() if _has_tokens(k.checks))
    return ActiveConfig(
        snapshot=snapshot, targets=targets, renew_interval_s=renew_interval_s, token_keys=token_keys
    )


def _has_tokens(checks: tuple[Check, ...]) -> bool:
    return any(isinstance(c, TokenCheck) for c in checks)


def upstream_url(plan: ProviderPlan, path: str, query: bytes) -> str:
    """Join the provider url and the request path; a path that repeats the url's own path
    prefix (url `.../v1`, request `/v1/chat/completions`) does not repeat it upstream."""
    rel = path[1:] if path.startswith("/") else path
    dedupe = plan.dedupe
    if dedupe and rel.startswith(dedupe) and (len(rel) == len(dedupe) or rel[len(dedupe)] == "/"):
        rel = rel[len(dedupe) + 1 :]
    url = plan.url + rel
    if query:
        url = f"{url}?{query.decode('latin-1')}"
    return url
