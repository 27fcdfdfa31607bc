"""Request paths: decoded and checked once, before routing; the upstream only ever sees the result.

Rule: a path is refused (400) when it holds a `.` or `..` segment in any encoding (raw, `%2e`,
double-encoded `%252e`, mixed case), an encoded slash or backslash (`%2f`, `%5c`, also double-encoded),
a raw backslash, or a control character. Anything else is normalised: empty segments collapse
(`//` -> `/`), and the path is re-encoded in one canonical way. The forwarded path is the provider's
base path + that canonical path, so no request can name a path outside the provider's base path,
whatever a server behind it would do with `..` or `%2f`.

A path refused here never reaches routing, authentication or an upstream. Paths without `%`, `\\`,
`/.` or `//` (nearly all of them) are only scanned, never rebuilt.
"""

from __future__ import annotations

import re
from urllib.parse import quote_from_bytes, unquote_to_bytes

# Characters kept as they are when the path is re-encoded (RFC 3986 pchar without "%").
_SAFE = "/:@!$&'()*+,;=-._~"
# A percent escape that, decoded once more, yields one of `.`, `/`, `\` or `%`: double encoding.
_SPECIAL_ESCAPE = re.compile(rb"%(2e|2f|5c|25)", re.IGNORECASE)
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
# Nearly every path: plain segments that do not start with a dot, no escapes. Already canonical.
_PLAIN = re.compile(rb"(?:/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*)*/?")


class PathRejected(Exception):
    """The request path is refused; the message says why (it goes to the log, not to the client)."""


def normalise_path(raw_path: bytes) -> str:
    """The canonical, percent-encoded form of `raw_path` (the bytes sent, without the query string).

    Raises PathRejected for a path that could leave its base path or be read two ways.
    """
    if _PLAIN.fullmatch(raw_path) and raw_path:
        return raw_path.decode("ascii")
    if not raw_path.startswith(b"/"):
        raise PathRejected("the path does not start with /")
    if _CONTROL.search(raw_path):
        raise PathRejected("the path holds a control character")
    if b"\\" in raw_path:
        raise PathRejected("the path holds a backslash")
    lowered = raw_path.lower()
    if b"%2f" in lowered or b"%5c" in lowered:
        raise PathRejected("the path holds an encoded slash or backslash")
    decoded = unquote_to_bytes(raw_path)
    if _CONTROL.search(decoded) or b"\\" in decoded:
        raise PathRejected("the decoded path holds a control character or backslash")
    if _SPECIAL_ESCAPE.search(decoded):
        raise PathRejected("the path is encoded twice")
    segments = []
    for segment in decoded.split(b"/"):
        if segment in (b".", b".."):
            raise PathRejected("the path holds a . or .. segment")
        if segment:
            segments.append(segment)
    trailing = b"/" if decoded.endswith(b"/") and segments else b""
    return quote_from_bytes(b"/" + b"/".join(segments) + trailing, safe=_SAFE)
