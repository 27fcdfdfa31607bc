"""Metering: a request's model tokens, from its estimate to the usage its provider reported.

A Meter is made once per routed request. Requests that no token limit can touch (`limited` is
False) never compute an estimate or ask a stream for usage; usage a response reports anyway is
still counted. The estimate is computed at the first admission that has a token check, once;
the headroom of every admission is merged so the response headers describe the tightest bucket
of each kind; the usage found in the response settles the reservations (see Permits).
"""

from __future__ import annotations

from onwards.limits.base import Decision, Headroom
from onwards.proxy.intake import Intake
from onwards.tokens.estimate import decode_object, estimate, needs_usage_request
from onwards.tokens.headers import ratelimit_headers, tighter
from onwards.tokens.usage import StreamUsage, Usage


class Meter:
    __slots__ = ("ask_usage", "estimate", "limited", "requests", "tokens", "usage")

    def __init__(self, limited: bool) -> None:
        self.limited = limited  # a token limit of the key, target or a provider may apply
        self.estimate: int | None = None
        # The gateway asks the provider for stream usage the client did not ask for (and strips it).
        self.ask_usage = False
        self.requests: Headroom | None = None
        self.tokens: Headroom | None = None
        self.usage: Usage | None = None

    def reserve(self, request: Intake, path: str) -> int:
        """The tokens this request reserves from each token bucket (computed once)."""
        if self.estimate is None:
            obj = decode_object(request.body, request.decoded)
            if obj is not None and request.decoded is None:
                request.decoded = obj  # a model rewrite later reuses it
            self.estimate = estimate(request.body, obj, request.tplan.target.default_max_tokens)
            self.ask_usage = needs_usage_request(path, obj)
        return self.estimate

    def admitted(self, decision: Decision) -> None:
        if decision.requests is not None:
            self.requests = tighter(self.requests, decision.requests)
        if decision.tokens is not None:
            self.tokens = tighter(self.tokens, decision.tokens)

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.requests is None and self.tokens is None:
            return []
        return ratelimit_headers(self.requests, self.tokens)

    def stream_reader(self) -> StreamUsage:
        return StreamUsage(strip=self.ask_usage)
