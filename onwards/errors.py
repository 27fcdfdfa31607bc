"""OpenAI-shaped error bodies the gateway itself produces: the one place they are built.

Bodies are encoded once at import: the request path only picks one.
"""

from __future__ import annotations

import orjson


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class GatewayError(Exception):
    """An error answered by the gateway itself, before or instead of an upstream response."""

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        log: str = "",
    ) -> None:
        super().__init__(log or body.decode(errors="replace"))
        self.status = status
        self.body = body
        self.headers = headers


_INTERNAL = "An internal error occurred. Please try again later."

MISSING_MODEL = error_body(
    "Could not parse onwards model from request. 'model' parameter must be supplied in either the body "
    "or in the Model-Override header.",
    "invalid_request_error",
    "bad_request",
    "model",
)
INVALID_JSON = error_body("Request body must be valid JSON.", "invalid_request_error", "bad_request")
UNAUTHENTICATED = error_body(
    "Please supply an authentication token to access this resource",
    "invalid_request_error",
    "unauthenticated",
)
INVALID_KEY = error_body("Invalid API key.", "invalid_request_error", "invalid_api_key")
FORBIDDEN = error_body("Forbidden", "invalid_request_error", "forbidden")  # a routing rule's deny
UPSTREAM_UNREACHABLE = error_body(_INTERNAL, "internal_error", "internal_error")
# Rust's words for a target with no provider it can use (an empty pool).
NO_PROVIDER = error_body(_INTERNAL, "internal_error", "service_unavailable")
GATEWAY_TIMEOUT = error_body(
    "The upstream service took too long to respond. Please try again.", "internal_error", "gateway_timeout"
)
INTERNAL = error_body(_INTERNAL, "internal_error", "internal_error")
# What a sanitized provider's 4xx becomes: its own body could name the provider.
UPSTREAM_REJECTED = error_body(
    "The upstream provider rejected the request.", "invalid_request_error", "upstream_error"
)
LIMITER_UNAVAILABLE = error_body(
    "The rate limiter is unavailable and this gateway is configured to refuse requests until it is back.",
    "internal_error",
    "limiter_unavailable",
)
BODY_TIMEOUT = error_body(
    "The request body was not received in time.", "invalid_request_error", "request_timeout"
)
BAD_PATH = error_body(
    "The request path is not allowed: it must not hold '.' or '..' segments, encoded slashes or "
    "backslashes, in any encoding.",
    "invalid_request_error",
    "invalid_path",
)
NOT_FOUND = error_body("Not found.", "invalid_request_error", "not_found")
METHOD_NOT_ALLOWED = error_body(
    "Method not allowed on this path.", "invalid_request_error", "method_not_allowed"
)


def model_not_found(name: str) -> bytes:
    return error_body(
        f"The model `{name}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )


def payload_too_large(limit: int) -> bytes:
    return error_body(
        f"Request body too large: the maximum allowed size is {limit} bytes.",
        "invalid_request_error",
        "payload_too_large",
    )


_SCOPE_WORDS = {"key": "your API key", "target": "this model", "provider": "every provider of this model"}


def rate_limited(scope: str) -> bytes:
    return error_body(
        f"You are sending requests too quickly. Please slow down. (rate limit of {_SCOPE_WORDS[scope]})",
        "rate_limit_error",
        "rate_limit",
    )


def concurrency_limited(scope: str) -> bytes:
    return error_body(
        "Too many concurrent requests. Please wait for some requests to complete before sending more. "
        f"(concurrency limit of {_SCOPE_WORDS[scope]})",
        "rate_limit_error",
        "concurrency_limit_exceeded",
    )


def tokens_limited(scope: str) -> bytes:
    # "type": "tokens" is what OpenAI sends for token limits: clients tell them from request limits.
    return error_body(
        "This request would exceed the token limit. Please wait before sending more. "
        f"(token limit of {_SCOPE_WORDS[scope]})",
        "tokens",
        "rate_limit",
    )


def tokens_too_large(scope: str) -> bytes:
    return error_body(
        "This request reserves more tokens than the token limit ever allows at once: lower max_tokens "
        f"or send a shorter prompt. (token limit of {_SCOPE_WORDS[scope]})",
        "tokens",
        "rate_limit",
    )


# Precomputed per scope: a 429 is the hot path of an overloaded gateway.
RATE_LIMITED = {scope: rate_limited(scope) for scope in _SCOPE_WORDS}
CONCURRENCY_LIMITED = {scope: concurrency_limited(scope) for scope in _SCOPE_WORDS}
TOKENS_LIMITED = {scope: tokens_limited(scope) for scope in _SCOPE_WORDS}
TOKENS_TOO_LARGE = {scope: tokens_too_large(scope) for scope in _SCOPE_WORDS}
