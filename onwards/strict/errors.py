"""Strict mode's error rules: what an untrusted provider's error becomes, and how errors hidden
inside a 2xx answer are found.

An untrusted provider's error never reaches the client as sent: its body may carry stack
traces, account details or echoed prompts. The status is masked where it describes the
operator's account rather than the caller's request (401/402/403/451 -> 502, 408 -> 504)
and the body is replaced by one fixed body per status (`{"error":{"message","type",
"param":null,"code":null}}`). Some providers answer 200 and put the failure in the body
(`{"error":{"code":429,...}}`) or in an SSE event; `embedded_error_status` and
`classify_sse_event` find those so the failover loop can treat them as the status they
carry. All bodies are built once at import. Nothing here logs or quotes an upstream body.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from onwards.errors import error_body

# Upstream statuses that describe the operator's account with the provider, not the
# caller's request: surfacing them would let a caller probe billing or key state.
_MASKED = {401: 502, 402: 502, 403: 502, 451: 502, 408: 504}

_STANDARD: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "Authentication failed"),
    402: ("api_error", "Service unavailable"),
    403: ("permission_error", "Permission denied"),
    404: ("not_found_error", "Not found"),
    408: ("api_error", "Gateway timeout"),
    413: ("invalid_request_error", "Request too large"),
    422: ("invalid_request_error", "Unprocessable request"),
    429: ("rate_limit_error", "Rate limit exceeded"),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    504: ("api_error", "Gateway timeout"),
}
_OTHER = ("api_error", "An error occurred")

# The Rust gateway maps only the rate-limit family of named codes: their retry meaning
# is unambiguous. Other names (`insufficient_quota`, `overloaded`, ...) count as 500.
_NAMED_CODES = {"rate_limit": 429, "rate_limit_error": 429, "rate_limit_exceeded": 429}


def strict_error_body(message: str, type_: str) -> bytes:
    """The strict envelope: `param` and `code` are always null."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": None}})


def mask_status(status: int) -> int:
    return _MASKED.get(status, status)


def standard_type_and_message(status: int) -> tuple[str, str]:
    return _STANDARD.get(status, _OTHER)


_STANDARD_BODIES = {status: strict_error_body(msg, type_) for status, (type_, msg) in _STANDARD.items()}
_OTHER_BODY = strict_error_body(_OTHER[1], _OTHER[0])


def standard_error(status: int) -> tuple[int, bytes]:
    """What the client gets instead of an untrusted provider's error with this status."""
    masked = mask_status(status)
    return masked, _STANDARD_BODIES.get(masked, _OTHER_BODY)


# Gateway errors strict mode adds. A 2xx that hides an error (or carries nothing) and
# cannot be retried collapses to 503, with the same body the Rust gateway sends.
BAD_GATEWAY = _STANDARD_BODIES[502]  # an upstream success body that does not fit its schema
SERVICE_UNAVAILABLE = error_body(
    "An internal error occurred. Please try again later.", "internal_error", "service_unavailable"
)
UPSTREAM_REJECTED = error_body(
    "The upstream provider rejected the request.", "invalid_request_error", "upstream_error"
)


def invalid_request(detail: str) -> bytes:
    return strict_error_body(f"Invalid request: {detail}", "invalid_request_error")


# --- errors inside a 2xx body ---------------------------------------------------------------------


def embedded_error_status(value: Any) -> int | None:
    """The HTTP status a provider put in `error.code` of a 2xx JSON body, if it is one.

    Only numeric codes (or numeric strings) from 400 to 599 count: a named code arrives with
    a real HTTP status anyway, and a normal completion must never be mistaken for an error.
    """
    if type(value) is not dict:
        return None
    error = value.get("error")
    if type(error) is not dict:
        return None
    code = error.get("code")
    if type(code) is str and code.isascii() and code.isdigit():
        code = int(code)
    if type(code) is not int:
        return None
    return code if 400 <= code <= 599 else None


def provider_status_code(code: Any) -> int | None:
    """A status from a provider error `code` for re-encoding a streamed error event:
    a number, a numeric string, or a rate-limit name (429)."""
    if type(code) is int and 0 <= code <= 65535:
        return code
    if type(code) is str:
        if code.isascii() and code.isdigit() and int(code) <= 65535:
            return int(code)
        return _NAMED_CODES.get(code)
    return None


SseKind = Literal["error", "data", "comment"]


def event_data(event: bytes) -> bytes | None:
    """An SSE event's `data` (its data lines joined by newlines, one optional space after the
    colon removed), or None when the event has no data line (a comment or keep-alive)."""
    parts: list[bytes] = []
    found = False
    for line in event.splitlines():
        if line.startswith(b"data:"):
            found = True
            rest = line[5:]
            parts.append(rest[1:] if rest.startswith(b" ") else rest)
    return b"\n".join(parts) if found else None


def classify_sse_event(event: bytes) -> tuple[SseKind, int | None]:
    """("error", status) for a data event carrying an embedded error status, ("data", None)
    for any other data event (including `[DONE]` and unreadable ones), ("comment", None)
    for an event without data."""
    data = event_data(event)
    if data is None:
        return "comment", None
    text = data.strip()
    if text == b"[DONE]":
        return "data", None
    try:
        status = embedded_error_status(orjson.loads(text))
    except orjson.JSONDecodeError:
        return "data", None
    return ("error", status) if status is not None else ("data", None)


def sse_error_event(value: Any, trusted: bool) -> bytes | None:
    """`data: {"error": ...}` for a stream chunk that carries a provider error, else None.

    The chunk's other fields are dropped so the line starts with `{"error"` (what stream
    reassemblers look for). A trusted provider's error object is kept as sent; an untrusted
    one gets the standard message for its (masked) code, and a code that is missing or not
    understood counts as 500. `error: null` and `error: {}` are not errors.
    """
    if type(value) is not dict:
        return None
    error = value.get("error")
    if type(error) is not dict or ("message" not in error and "code" not in error):
        return None
    if trusted:
        return b"data: " + orjson.dumps({"error": error})
    code = provider_status_code(error.get("code"))
    masked = mask_status(500 if code is None else code)
    type_, message = standard_type_and_message(masked)
    envelope = {"error": {"message": message, "type": type_, "param": None, "code": masked}}
    return b"data: " + orjson.dumps(envelope)
