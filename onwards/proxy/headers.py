"""Which headers cross the gateway, in each direction."""

from __future__ import annotations

# Never forwarded upstream: hop-by-hop headers (RFC 9110 7.6.1), the caller's credentials
# (the provider key replaces them), browser context that leaks the caller, conditional
# headers that would make an upstream answer 304 to a client that never cached anything,
# and our own routing header.
DROP_UPSTREAM: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"authorization",
        b"x-api-key",
        b"api-key",
        b"cookie",
        b"origin",
        b"referer",
        b"sec-fetch-site",
        b"sec-fetch-mode",
        b"sec-fetch-dest",
        b"sec-fetch-user",
        b"if-modified-since",
        b"if-none-match",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"model-override",
        b"x-request-id",
    }
)

# Never copied from the upstream response: the server frames the response to the client itself.
DROP_DOWNSTREAM: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"date",
        b"server",
    }
)


# Browser context comes in families that grow (Sec-Fetch-Storage-Access, new client hints), so
# these are dropped by prefix rather than by the names known today.
_DROP_UPSTREAM_PREFIXES = (b"sec-ch-ua", b"sec-fetch-")


def forwardable(name: bytes) -> bool:
    return name not in DROP_UPSTREAM and not name.startswith(_DROP_UPSTREAM_PREFIXES)
