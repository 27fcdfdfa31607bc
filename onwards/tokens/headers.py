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

_NAMES = {
    "requests": (
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-reset-requests",
    ),
    "tokens": (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", b"x-ratelimit-reset-tokens"),
}
SHOULD_NOT_RETRY: Header = (b"x-should-retry", b"false")


def duration(seconds: float) -> bytes:
    """`seconds` as a Go-style duration, to the millisecond (rounded up): 20ms, 1.5s, 6m0s, 1h0m0s."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms < 1000:
        return b"%dms" % ms
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    text = f"{secs}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}".encode()
    if minutes:
        return f"{minutes}m{text}".encode()
    return text.encode()


def tighter(a: Headroom | None, b: Headroom | None) -> Headroom | None:
    """The bucket with fewer units left (a request admitted twice over a fallback has two)."""
    if a is None:
        return b
    if b is None or a.remaining <= b.remaining:
        return a
    return b


def ratelimit_headers(requests: Headroom | None, tokens: Headroom | None) -> list[Header]:
    out: list[Header] = []
    for kind, room in (("requests", requests), ("tokens", tokens)):
        if room is not None:
            limit, remaining, reset = _NAMES[kind]
            out += (
                (limit, b"%d" % room.limit),
                (remaining, b"%d" % max(room.remaining, 0)),
                (reset, duration(room.reset_s)),
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
