"""OpenAI's rate-limit headers from what the limiter reported, and the retry headers of a 429.

`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` describe the tightest request bucket and
the tightest token bucket that applied to the request (the one with the fewest units left): its
burst, what it has left after this request, and the time until it is full again, written as a
duration the way OpenAI does (`20ms`, `1s`, `1.5s`, `6m0s`). A kind with no bucket sends none.
"""

from __future__ import annotations

import math

from onwards.limits.base import Headroom

Header = tuple[bytes, bytes]

SHOULD_NOT_RETRY: Header = (b"x-should-retry", b"false")


def duration(seconds: float) -> bytes:
    """`seconds` as a Go-style duration, to the millisecond (rounded up): 20ms, 1.5s, 6m0s, 1h0m0s."""
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms < 1000:
        return b"%dms" % (ms if ms > 0 else 0)
    secs, millis = divmod(ms, 1000)
    minutes, secs = divmod(secs, 60)
    text = b"%ds" % secs if not millis else (b"%d.%03d" % (secs, millis)).rstrip(b"0") + b"s"
    if not minutes:
        return text
    hours, minutes = divmod(minutes, 60)
    if hours:
        return b"%dh%dm" % (hours, minutes) + text
    return b"%dm" % minutes + text


def tighter(a: Headroom | None, b: Headroom | None) -> Headroom | None:
    """The bucket with fewer units left (a request admitted twice over a fallback has two)."""
    if a is None:
        return b
    if b is None or a.remaining <= b.remaining:
        return a
    return b


def ratelimit_headers(requests: Headroom | None, tokens: Headroom | None) -> list[Header]:
    out: list[Header] = []
    if requests is not None:
        out += (
            (b"x-ratelimit-limit-requests", b"%d" % requests.limit),
            (b"x-ratelimit-remaining-requests", b"%d" % max(requests.remaining, 0)),
            (b"x-ratelimit-reset-requests", duration(requests.reset_s)),
        )
    if tokens is not None:
        out += (
            (b"x-ratelimit-limit-tokens", b"%d" % tokens.limit),
            (b"x-ratelimit-remaining-tokens", b"%d" % max(tokens.remaining, 0)),
            (b"x-ratelimit-reset-tokens", duration(tokens.reset_s)),
        )
    return out


def retry_headers(retry_after: float | None, hopeless: bool) -> tuple[Header, ...]:
    """`retry-after` (whole seconds, at least 1) and `retry-after-ms` when a wait helps;
    `x-should-retry: false` when it cannot (the request is larger than the bucket)."""
    if hopeless:
        return (SHOULD_NOT_RETRY,)
    if retry_after is None:
        return ()
    return (
        (b"retry-after", b"%d" % max(1, math.ceil(retry_after))),
        (b"retry-after-ms", b"%d" % max(1, math.ceil(retry_after * 1000))),
    )
