"""Errors of conversion, and error bodies carried from one protocol's shape to the other's.

A request that cannot be converted is the client's fault: ConversionError becomes a 400 in the client's own
shape. An upstream answer that cannot be converted is the provider's fault: UpstreamFormatError becomes a
502. Upstream error bodies keep their status and message; only the envelope changes.

Anthropic: ``{"type": "error", "error": {"type": ..., "message": ...}}``, the type fixed by the status.
OpenAI: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "ConversionError",
    "UpstreamFormatError",
    "anthropic_error",
    "anthropic_error_type",
    "error_message",
    "openai_error",
    "openai_error_type",
    "to_anthropic_error",
    "to_openai_error",
]


class ConversionError(Exception):
    """The client's request has something with no counterpart in the provider's protocol, or is malformed."""

    status = 400

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UpstreamFormatError(Exception):
    """The provider's answer is not a well-formed response of its protocol."""

    status = 502

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# Anthropic error types as OpenAI error types; the Anthropic type itself travels as the code.
_OPENAI_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "invalid_request_error",
    "billing_error": "insufficient_quota",
    "permission_error": "invalid_request_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "timeout_error": "timeout",
    "overloaded_error": "server_error",
    "api_error": "server_error",
}


def anthropic_error_type(status: int) -> str:
    known = _ANTHROPIC_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error(status: int, message: str, type_: str | None = None) -> bytes:
    return orjson.dumps(
        {"type": "error", "error": {"type": type_ or anthropic_error_type(status), "message": message}}
    )


def openai_error(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_message(body: bytes) -> str:
    """The human message of an error body of either shape, or the body's text when it has none."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(parsed.get("message"), str):
            return str(parsed["message"])
    text = body.decode("utf-8", "replace").strip()
    return text[:1000] if text else "The upstream provider returned an error without a message."


def to_anthropic_error(status: int, body: bytes) -> bytes:
    """An OpenAI-shaped (or unshaped) error body as Anthropic's, for the same status."""
    return anthropic_error(status, error_message(body))


def openai_error_type(anthropic_type: str) -> str:
    return _OPENAI_TYPES.get(anthropic_type, "server_error")


def to_openai_error(status: int, body: bytes) -> bytes:
    """An Anthropic-shaped (or unshaped) error body as OpenAI's, for the same status."""
    a_type = anthropic_error_type(status)
    try:
        parsed = orjson.loads(body)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            a_type = err["type"]
    except orjson.JSONDecodeError:
        pass
    return openai_error(error_message(body), openai_error_type(a_type), a_type)
