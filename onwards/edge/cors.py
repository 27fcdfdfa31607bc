"""CORS: the top-level `cors` config, compiled once into the header values browsers are answered with.

Rule: with a `cors` policy, the gateway answers preflights (`OPTIONS` with `Origin` and
`Access-Control-Request-Method`) itself, 204 when the origin, method and headers are allowed and a
403 JSON error naming what is not; responses to allowed origins carry `Access-Control-Allow-Origin`
(and the exposed headers). Without a policy no CORS header is ever sent and a preflight gets a 405
JSON error that says CORS is off. Every header value is built here, at config load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from onwards.errors import error_body

Headers = tuple[tuple[bytes, bytes], ...]

DEFAULT_METHODS = ("GET", "POST", "OPTIONS")
DEFAULT_HEADERS = ("authorization", "content-type", "model-override", "x-request-id")
DEFAULT_EXPOSE = ("x-request-id",)
DEFAULT_MAX_AGE_SECS = 600

PREFLIGHT_WITHOUT_CORS = error_body(
    "CORS is not enabled on this gateway, so browser preflight (OPTIONS) requests are refused. "
    "Add a top-level `cors` section to the config to allow an origin.",
    "invalid_request_error",
    "cors_disabled",
)


def _refusal(what: str) -> bytes:
    return error_body(
        f"CORS preflight refused: {what} is not allowed by this gateway's cors policy.",
        "invalid_request_error",
        "cors_not_allowed",
    )


ORIGIN_REFUSED = _refusal("the origin")
METHOD_REFUSED = _refusal("the requested method")


@dataclass(frozen=True, slots=True)
class Preflight:
    status: int
    headers: Headers
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[bytes]  # lower-cased; empty with any_origin
    any_origin: bool
    methods: frozenset[bytes]  # upper-cased
    headers: frozenset[bytes]  # lower-cased; empty with any_header
    any_header: bool
    credentials: bool
    # Precomputed header lines.
    allow_methods: bytes
    allow_headers: bytes
    max_age: bytes
    expose: bytes
    # For `*` without credentials the response headers never vary: built once.
    static_response: Headers

    def allows(self, origin: bytes) -> bool:
        return self.any_origin or origin.lower() in self.origins

    def response_headers(self, origin: bytes) -> Headers:
        """Headers added to a proxied response for a request with this Origin; () when not allowed."""
        if self.static_response:
            return self.static_response
        if origin.lower() not in self.origins and not self.any_origin:
            return ()
        out: list[tuple[bytes, bytes]] = [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self.expose:
            out.append((b"access-control-expose-headers", self.expose))
        return tuple(out)

    def preflight(self, origin: bytes, method: bytes, requested: bytes | None) -> Preflight:
        if not self.allows(origin):
            return Preflight(403, (), ORIGIN_REFUSED)
        if method.upper() not in self.methods:
            return Preflight(403, (), METHOD_REFUSED)
        if self.any_header:
            allow_headers = requested or b""
        else:
            for name in (requested or b"").split(b","):
                name = name.strip().lower()
                if name and name not in self.headers:
                    return Preflight(403, (), _refusal(f"the request header {name.decode('latin-1')!r}"))
            allow_headers = self.allow_headers
        out = list(self.response_headers(origin))
        out.append((b"access-control-allow-methods", self.allow_methods))
        if allow_headers:
            out.append((b"access-control-allow-headers", allow_headers))
        out.append((b"access-control-max-age", self.max_age))
        if self.any_header:
            # The answer echoes the request's headers, so a cache must key on them.
            out.append((b"vary", b"access-control-request-headers"))
        return Preflight(204, tuple(out))


Fail = Callable[[str, str], NoReturn]


def _names(value: object, path: str, fail: Fail, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        fail(path, "must be a list of non-empty strings")
    for v in value:
        if any(ord(ch) < 0x21 or ord(ch) > 0x7E or ch == "," for ch in v.strip()):
            fail(path, f"{v!r} must be visible ASCII without commas")
    return tuple(v.strip() for v in value)


def parse_cors(value: object, path: str, fail: Fail) -> CorsPolicy:
    """Validate the `cors` object and compile it; `fail(path, detail)` raises the config error."""
    if not isinstance(value, dict):
        fail(path, "must be an object")
    known = {
        "allowed_origins",
        "allowed_methods",
        "allowed_headers",
        "expose_headers",
        "max_age_secs",
        "allow_credentials",
    }
    for name in value:
        if name not in known:
            fail(f"{path}.{name}", f"unknown field; expected one of {', '.join(sorted(known))}")
    if "allowed_origins" not in value:
        fail(f"{path}.allowed_origins", 'required: the origins browsers may call from, or ["*"]')
    origins = _names(value["allowed_origins"], f"{path}.allowed_origins", fail, ())
    if not origins:
        fail(f"{path}.allowed_origins", "must name at least one origin")
    methods = _names(value.get("allowed_methods"), f"{path}.allowed_methods", fail, DEFAULT_METHODS)
    headers = _names(value.get("allowed_headers"), f"{path}.allowed_headers", fail, DEFAULT_HEADERS)
    expose = _names(value.get("expose_headers"), f"{path}.expose_headers", fail, DEFAULT_EXPOSE)
    max_age = value.get("max_age_secs", DEFAULT_MAX_AGE_SECS)
    if not isinstance(max_age, int) or isinstance(max_age, bool) or max_age < 0:
        fail(f"{path}.max_age_secs", "must be an integer >= 0")
    credentials = value.get("allow_credentials", False)
    if not isinstance(credentials, bool):
        fail(f"{path}.allow_credentials", "must be true or false")
    any_origin = "*" in origins
    if any_origin and credentials:
        fail(
            f"{path}.allow_credentials",
            'cannot be true with allowed_origins ["*"]: browsers refuse credentials for any origin; '
            "list the origins instead",
        )
    any_header = "*" in headers
    expose_value = ", ".join(expose).encode()
    static: Headers = ()
    if any_origin:
        static = ((b"access-control-allow-origin", b"*"),)
        if expose_value:
            static += ((b"access-control-expose-headers", expose_value),)
    return CorsPolicy(
        origins=frozenset(o.lower().encode() for o in origins if o != "*"),
        any_origin=any_origin,
        methods=frozenset(m.upper().encode() for m in methods),
        headers=frozenset(h.lower().encode() for h in headers if h != "*"),
        any_header=any_header,
        credentials=credentials,
        allow_methods=", ".join(m.upper() for m in methods).encode(),
        allow_headers=", ".join(h.lower() for h in headers if h != "*").encode(),
        max_age=str(max_age).encode(),
        expose=expose_value,
        static_response=static,
    )
