"""The immutable config snapshot that the request path reads.

Everything here is computed once when a config is loaded, so that serving a request is
lookups and tuple concatenation, never parsing. A reload builds a new Snapshot and swaps
one reference; requests in flight keep the snapshot they started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from onwards.config.open_responses import OpenResponsesSpec
from onwards.edge.cors import CorsPolicy

DEFAULT_STREAM_IDLE_TIMEOUT_SECS = 300.0

Scope = Literal["key", "target", "provider"]
Strategy = Literal["weighted_random", "priority"]
# The protocol a provider speaks: OpenAI Chat Completions, or Anthropic Messages (docs/protocols.md).
ProviderFormat = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class RateCheck:
    """One token bucket: `rate` tokens per second, at most `burst` tokens, starting full."""

    scope: Scope
    limiter_id: str  # stable across reloads: "target:<alias>", "key:<name>", "provider:<alias>:<hash>"
    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class ConcurrencyCheck:
    """One semaphore: at most `limit` requests hold a permit at once."""

    scope: Scope
    limiter_id: str
    limit: int


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """One bucket of model tokens: `rate` tokens per second, at most `burst` tokens, starting full.

    Unlike a RateCheck, a request takes a varying amount: its estimate at admission, settled to
    the usage the provider reported once the response ends. The level may go below zero when a
    request used more than it reserved; the bucket then admits nothing until it refills.
    """

    scope: Scope
    limiter_id: str  # the same id as the scope's other limits; its Redis key has its own kind
    rate: float
    burst: int
    per_minute: int  # tokens_per_minute as configured, for humans (the rate is this / 60)


Check = RateCheck | ConcurrencyCheck | TokenCheck

# Output tokens reserved for a request that names no max_tokens (see docs/rate-limiting.md).
DEFAULT_MAX_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class Backoff:
    """The pause before retry N (1-based): full jitter draws from [0, base(N)] where
    base(N) = min(initial_ms * factor^(N-1), max_ms); "none" pauses exactly base(N)."""

    initial_ms: int
    max_ms: int = 5000
    factor: float = 2.0
    jitter: Literal["full", "none"] = "full"


@dataclass(frozen=True, slots=True)
class FallbackSpec:
    enabled: bool = False
    on_status: tuple[int, ...] = ()
    on_rate_limit: bool = False
    max_attempts: int | None = None
    with_replacement: bool = False
    backoff: Backoff | None = None  # None: retries do not pause
    max_total_backoff_ms: int | None = None  # stop retrying once the pauses would exceed this

    def matches(self, status: int) -> bool:
        """`5` matches 5xx, `50` matches 500-509, three digits match exactly."""
        if not self.enabled:
            return False
        for pattern in self.on_status:
            if pattern < 10:
                if status // 100 == pattern:
                    return True
            elif pattern < 100:
                if status // 10 == pattern:
                    return True
            elif status == pattern:
                return True
        return False


@dataclass(frozen=True, slots=True)
class ReasoningWrite:
    """Where one provider wants a reasoning effort written, and the value for each effort."""

    target_path: str  # JSON pointer, e.g. "/chat_template_kwargs/thinking"
    segments: tuple[str, ...]
    values: tuple[tuple[str, bytes], ...]  # effort -> the value as JSON bytes (kept hashable)

    def value_for(self, effort: str) -> bytes | None:
        for name, value in self.values:
            if name == effort:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SurfaceTranslation:
    """One API surface's `reasoning_translation`: every effort is mapped or unsupported."""

    supported: tuple[str, ...]  # in the canonical effort order
    writes: tuple[ReasoningWrite, ...]
    budget_write: ReasoningWrite | None = None  # the `/thinking_token_budget` write, if any


@dataclass(frozen=True, slots=True)
class ReasoningTranslation:
    chat_completions: SurfaceTranslation | None = None
    responses: SurfaceTranslation | None = None


@dataclass(frozen=True, slots=True)
class MockSpec:
    """How a `mock://` provider answers (onwards/mock_provider.py); an Onwards extension."""

    delay_ms: float = 0.0  # before the response headers, like an upstream's time to first byte
    stream_delay_ms: float = 0.0  # between two streamed events
    reply: str | None = None  # fixed answer text; None echoes the last user message
    embedding_dimensions: int = 16  # when the request does not ask for `dimensions`


@dataclass(frozen=True, slots=True)
class Provider:
    alias: str
    index: int
    url: str  # normalised to end with "/"
    base_path: str  # the url's path without the trailing "/", "" for the root
    onwards_model: str | None
    weight: int
    # (header name, full value) ready to send, or None when no onwards_key is configured.
    auth_header: tuple[str, str] | None
    response_headers: tuple[tuple[str, str], ...]
    sanitize_response: bool
    request_timeout_secs: float | None
    checks: tuple[Check, ...]  # provider-scope limits, admitted when this provider is tried
    label: str  # bounded metrics label, "<alias>/<index>"; never contains secrets
    open_responses_adapter: bool = False  # /v1/responses via Chat Completions (the first provider decides)
    # Strict mode passes this provider's errors on as sent (its own `trusted`, else the pool's).
    trusted: bool = False
    # traceparent/tracestate go to this provider (`propagate_trace_context`, else `trusted`).
    propagate_trace_context: bool = False
    reasoning_translation: ReasoningTranslation | None = None
    # Longest gap between two chunks of the upstream's response body.
    stream_idle_timeout_secs: float = DEFAULT_STREAM_IDLE_TIMEOUT_SECS
    # Egress proxy: a URL, False for a direct connection, None to follow HTTP(S)_PROXY/NO_PROXY.
    proxy: str | Literal[False] | None = None
    format: ProviderFormat = "openai"
    mock: MockSpec | None = None  # set for a `mock://` url: answered in process, never over a socket


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """Applies to a request whose key carries every `match` label; first match wins."""

    match: frozenset[tuple[str, str]]
    action: Literal["deny", "redirect"]
    target: str | None = None  # the alias a redirect serves instead


@dataclass(frozen=True, slots=True)
class Target:
    alias: str
    providers: tuple[Provider, ...]
    strategy: Strategy
    fallback: FallbackSpec
    keys: frozenset[str] | None  # accepted bearer tokens; None means the target is open
    checks: tuple[Check, ...]  # target-scope (pool) limits
    response_headers: tuple[tuple[str, str], ...]  # pool-level, applied before provider headers
    sanitize_response: bool
    # Provider weights, precomputed for weighted_random selection.
    weights: tuple[int, ...] = ()
    open_responses: OpenResponsesSpec = field(default_factory=OpenResponsesSpec)
    trusted: bool = False  # the pool's default for its providers
    routing_rules: tuple[RoutingRule, ...] = ()
    # Output tokens a token-limited request reserves when its body names no maximum.
    default_max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(frozen=True, slots=True)
class KeyDefinition:
    name: str
    key: str
    checks: tuple[Check, ...]  # key-scope limits, held across every target the key uses
    labels: tuple[tuple[str, str], ...] = ()
    label_set: frozenset[tuple[str, str]] = frozenset()  # the labels, for routing-rule matching


@dataclass(frozen=True, slots=True)
class HttpPool:
    max_idle_per_host: int = 100
    idle_timeout_secs: float = 90.0


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    on_redis_error: Literal["allow", "deny"] = "allow"
    redis_timeout_ms: int = 250  # no request waits longer than this for a dead Redis
    lease_ttl_ms: int = 30_000  # a crashed worker's permits come back after this
    renew_interval_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class Snapshot:
    targets: dict[str, Target]
    keys_by_token: dict[str, KeyDefinition]
    http_pool: HttpPool = field(default_factory=HttpPool)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    max_body_bytes: int = 32 * 1024 * 1024
    strict_mode: bool = False  # read at start only: a reload cannot switch routers
    cors: CorsPolicy | None = None  # None: no CORS headers, preflights refused
    version: str = ""  # content hash for files, stored version for Redis
    origin: str = ""  # the file path or redis key it came from
    # Fields no part of the config knows, as paths (with a spelling hint when one is close).
    unknown_fields: tuple[str, ...] = ()
    # The bytes it was parsed from (when it came from bytes), kept so a worker can hand the last
    # good config on to workers that start while the source is broken.
    raw: bytes = b""
