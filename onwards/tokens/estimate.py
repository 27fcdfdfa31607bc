"""What a request reserves from its token buckets: a cheap prompt estimate plus its output cap.

The prompt estimate is the request body's length in bytes divided by four (rounded up). English
text runs about four characters to a token, and the JSON around the text (keys, quotes, roles)
only adds bytes, so this errs high for text; settlement gives back what was not used. No
tokenizer runs: it would cost more than the rest of the request path and need model files. The
output cap is the first of `max_completion_tokens`, `max_tokens` or `max_output_tokens` the body
names, else the target's `default_max_tokens`, times `n` when the body asks for several choices.
A body that is not a JSON object (a GET, an audio
upload) reserves nothing: it is still refused while a bucket is in debt, and settled to any usage
the provider reports.
"""

from __future__ import annotations

import orjson

BYTES_PER_TOKEN = 4
_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# The endpoints whose streams report usage only when asked with stream_options.include_usage.
_ASK_FOR_USAGE = ("/chat/completions", "/completions")


def decode_object(body: bytes, decoded: object | None) -> dict[str, object] | None:
    """The body as a JSON object, decoding it only when routing did not already."""
    if decoded is None and body:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    return decoded if isinstance(decoded, dict) else None


def estimate(body: bytes, request: dict[str, object] | None, default_max_tokens: int) -> int:
    """The tokens to reserve: prompt estimate plus output cap, 0 for a body that is not JSON."""
    if request is None:
        return 0
    cap = default_max_tokens
    for name in _CAPS:
        value = request.get(name)
        if type(value) is int and value >= 0:
            cap = value
            break
    choices = request.get("n")
    if type(choices) is int and choices > 1:
        cap *= choices  # every choice may run to the cap
    return -(-len(body) // BYTES_PER_TOKEN) + cap


def needs_usage_request(path: str, request: dict[str, object] | None) -> bool:
    """True for a stream that will not report usage unless the gateway asks for it."""
    if request is None or request.get("stream") is not True or not path.endswith(_ASK_FOR_USAGE):
        return False
    options = request.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_usage") is True)


def with_usage_requested(request: dict[str, object]) -> dict[str, object]:
    """The request asking the provider for a final usage chunk (the client's own options kept)."""
    options = request.get("stream_options")
    merged = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    return {**request, "stream_options": merged}
