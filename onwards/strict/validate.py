"""Strict mode's request check: a body must fit the OpenAI schema of its route before anything
is sent upstream.

Malformed JSON (and an empty body) is 400; JSON that does not fit the schema (not an
object, `model` missing, a field of the wrong type) is 422, as the Rust onwards answers.
The message names the field path, never its value. The checked body is not re-encoded:
the original bytes are forwarded, so nothing the client sent is reordered or lost.
"""

from __future__ import annotations

from typing import Any

import orjson

from onwards.errors import GatewayError
from onwards.strict.errors import invalid_request
from onwards.strict.schema import Invalid
from onwards.strict.schemas import REQUEST_SCHEMAS
from onwards.strict.success import Surface


def validate_request(surface: Surface, body: bytes) -> dict[str, Any]:
    """The decoded request, or GatewayError(400 | 422) with a strict error body."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = (
            "the body is empty"
            if not body.strip()
            else f"malformed JSON at line {exc.lineno} column {exc.colno}"
        )
        raise GatewayError(400, invalid_request(detail), log=f"strict: {detail}") from None
    schema = REQUEST_SCHEMAS[surface]
    try:
        schema.read(value, "")
    except Invalid as exc:
        detail = str(exc)
        raise GatewayError(422, invalid_request(detail), log=f"strict: {detail}") from None
    return value
