"""Which target a request is for: the model-override header, else the body's `model`."""

from __future__ import annotations

import orjson

from onwards import errors
from onwards.errors import GatewayError


def _header_text(value: bytes) -> bool:
    # What the Rust gateway's header reading accepts: printable ASCII, spaces and tabs included.
    return all(0x20 <= b <= 0x7E or b == 0x09 for b in value)


def requested_model(override: bytes | None, body: bytes) -> tuple[str, object | None]:
    """The model name the client asked for, and the decoded body when it had to be decoded.

    The decoded body is returned so a later rewrite of `model` does not parse it twice. As in
    the Rust gateway, a model-override header that is not text, and a body that is not a JSON
    object with a string `model`, are both "no model" (400, param `model`); an empty name is
    looked up like any other (and is not found).
    """
    if override is not None:
        if not _header_text(override):
            raise GatewayError(400, errors.MISSING_MODEL, log="model-override header is not ASCII text")
        return override.decode("ascii"), None
    if not body:
        raise GatewayError(400, errors.MISSING_MODEL, log="no model: empty body and no model-override header")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(400, errors.MISSING_MODEL, log="request body is not valid JSON") from None
    model = decoded.get("model") if isinstance(decoded, dict) else None
    if not isinstance(model, str):
        raise GatewayError(400, errors.MISSING_MODEL, log="request body has no string 'model'")
    return model, decoded


def route_group(path: str) -> str:
    """A bounded label for metrics and logs: known OpenAI endpoints by name, everything else grouped."""
    group = _KNOWN_ROUTES.get(path)
    if group is not None:
        return group
    if path.startswith("/v1/"):
        return "/v1/other"
    return "other"


_KNOWN_ROUTES = {
    p: p
    for p in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/models",
        "/v1/moderations",
        "/v1/audio/transcriptions",
        "/v1/audio/speech",
        "/v1/images/generations",
        "/v1/rerank",
        "/v1/messages",
        "/v1/messages/count_tokens",
    )
}
