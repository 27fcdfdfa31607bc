"""Response sanitization for targets and providers with ``sanitize_response: true``.

Some OpenAI-compatible providers add their own fields to chat completions (``provider``, ``cost``,
``native_finish_reason``, ...) and report their own model name. With sanitization on, a chat completion is
re-emitted with only the fields of the OpenAI schema, and ``model`` is set to the name the client asked for.
Upstream errors are replaced by generic bodies so provider details never reach the client.

This module only transforms bytes; the proxy decides when to call it (2xx ``*/chat/completions`` JSON
bodies, every 2xx ``text/event-stream`` body, every upstream non-2xx) and owns headers such as
Content-Length. Error messages raised here never quote the upstream body: bodies may hold user data.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from onwards import errors

__all__ = [
    "MAX_EVENT_BYTES",
    "SanitizeError",
    "SseSanitizer",
    "sanitize_chat_completion",
    "sanitized_error_body",
]

# Largest SSE event (including the blank line that ends it) that is re-framed and rewritten.
MAX_EVENT_BYTES = 64 * 1024

_DEFAULT_ID = "chatcmpl-unknown"
_PROMPT_DETAILS = ("cached_tokens", "audio_tokens")
_COMPLETION_DETAILS = (
    "reasoning_tokens",
    "audio_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
)

# An event ends at the first blank line. "\n\r\n" also matches the CRLF form "\r\n\r\n" (from its first
# "\n") and the mixed "\r\n\n" is caught by "\n\n", so two searches cover every \n / \r\n framing.
_LF_END = b"\n\n"
_CRLF_END = b"\n\r\n"


class SanitizeError(Exception):
    """The upstream body cannot be read as a chat completion (the proxy answers 500 internal_error)."""


def sanitized_error_body(status: int) -> bytes:
    """Body that replaces an upstream non-2xx response; the caller keeps the upstream status."""
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"not an HTTP status code: {status!r}")
    if 200 <= status <= 299:
        raise ValueError(f"status {status} is a success; only upstream errors get a sanitized error body")
    return errors.UPSTREAM_REJECTED if 400 <= status <= 499 else errors.INTERNAL


# --- field readers -------------------------------------------------------------------------------------
# A JSON null is read like an absent field, so "id": null gets the default instead of failing the whole
# response. A value of the wrong type is refused: the body is then not a chat completion we can vouch for.
# type() is compared rather than isinstance(): true/false are ints to Python but not counts or indexes.
# The readers run for every stream chunk, so the common case (field present with the right type) is
# tested inline and only defaults and errors go through a function call.


def _default_or_fail(value: Any, default: Any, field: str, expected: str) -> Any:
    if value is None:
        return default
    raise SanitizeError(f"{field} must be {expected}")


def _count(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if type(value) is int and value >= 0:
        return value
    return _default_or_fail(value, 0, where + key, "a non-negative integer")


def _details(value: Any, keys: tuple[str, ...], where: str) -> dict[str, int] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise SanitizeError(f"{where[:-1]} must be an object or null")
    return {key: _count(value, key, where) for key in keys}


def _usage(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise SanitizeError("usage must be an object or null")
    return {
        "prompt_tokens": _count(value, "prompt_tokens", "usage."),
        "completion_tokens": _count(value, "completion_tokens", "usage."),
        "total_tokens": _count(value, "total_tokens", "usage."),
        "prompt_tokens_details": _details(
            value.get("prompt_tokens_details"), _PROMPT_DETAILS, "usage.prompt_tokens_details."
        ),
        "completion_tokens_details": _details(
            value.get("completion_tokens_details"), _COMPLETION_DETAILS, "usage.completion_tokens_details."
        ),
    }


def _choice_start(choice: Any, i: int) -> dict[str, Any]:
    """The choice's index, read first so the output keeps OpenAI's field order."""
    if type(choice) is not dict:
        raise SanitizeError(f"choices[{i}] must be an object")
    index = choice.get("index")
    if type(index) is not int or index < 0:
        index = _default_or_fail(index, 0, f"choices[{i}].index", "a non-negative integer")
    return {"index": index}


def _finish_reason(choice: dict[str, Any], i: int) -> str | None:
    value = choice.get("finish_reason")
    if value is None or type(value) is str:
        return value
    raise SanitizeError(f"choices[{i}].finish_reason must be a string or null")


def _message_choice(choice: Any, i: int) -> dict[str, Any]:
    out = _choice_start(choice, i)
    if "message" not in choice:
        raise SanitizeError(f"missing required field choices[{i}].message")
    out["message"] = choice["message"]
    out["finish_reason"] = _finish_reason(choice, i)
    out["logprobs"] = choice.get("logprobs")
    # vLLM's stop_reason (the matched stop string or token id) is kept when sent, never invented.
    if "stop_reason" in choice:
        out["stop_reason"] = choice["stop_reason"]
    return out


def _delta_choice(choice: Any, i: int) -> dict[str, Any]:
    out = _choice_start(choice, i)
    delta = choice.get("delta")
    # An empty delta rather than null: SDKs read choice.delta.content without a null check.
    out["delta"] = {} if delta is None else delta
    out["finish_reason"] = _finish_reason(choice, i)
    out["logprobs"] = choice.get("logprobs")
    return out


def _rewrite(doc: Any, client_model: str, object_default: str, streaming: bool) -> dict[str, Any]:
    if type(doc) is not dict:
        raise SanitizeError("body must be a JSON object")
    get = doc.get
    if type(get("model")) is not str:
        raise SanitizeError("model must be a string" if "model" in doc else "missing required field model")
    choices = get("choices")
    if type(choices) is not list:
        raise SanitizeError(
            "choices must be an array" if "choices" in doc else "missing required field choices"
        )

    id_ = get("id")
    if type(id_) is not str:
        id_ = _default_or_fail(id_, _DEFAULT_ID, "id", "a string")
    object_ = get("object")
    if type(object_) is not str:
        object_ = _default_or_fail(object_, object_default, "object", "a string")
    created = get("created")
    if type(created) is not int or created < 0:
        created = _default_or_fail(created, None, "created", "a non-negative integer")
        if created is None:
            created = int(time.time())
    fingerprint = get("system_fingerprint")
    if fingerprint is not None and type(fingerprint) is not str:
        raise SanitizeError("system_fingerprint must be a string or null")
    tier = get("service_tier")
    if tier is not None and type(tier) is not str:
        raise SanitizeError("service_tier must be a string or null")
    usage = get("usage")
    rewrite_choice = _delta_choice if streaming else _message_choice

    # Built in the order OpenAI emits the fields; anything not named here is dropped.
    return {
        "id": id_,
        "object": object_,
        "created": created,
        "model": client_model,
        "choices": [rewrite_choice(choice, i) for i, choice in enumerate(choices)],
        "usage": None if usage is None else _usage(usage),
        "system_fingerprint": fingerprint,
        "service_tier": tier,
    }


def _check_model(client_model: Any) -> None:
    if type(client_model) is not str:
        raise TypeError(f"client_model must be a str, not {type(client_model).__name__}")


def sanitize_chat_completion(body: bytes, client_model: str) -> bytes:
    """Rewrite a non-streaming chat completion to the OpenAI fields, with ``model`` set to client_model.

    Raises SanitizeError when the body is not JSON, lacks ``model``, ``choices`` or a choice's ``message``,
    or carries a known field with the wrong type.
    """
    _check_model(client_model)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        # from None: the decoder's message is about the body; keep it out of logs and tracebacks.
        raise SanitizeError("upstream body is not valid JSON") from None
    return orjson.dumps(_rewrite(doc, client_model, "chat.completion", streaming=False))


def _find_end(buf: bytes | bytearray, start: int) -> int:
    """Index just past the first blank line at or after start, or -1."""
    lf = buf.find(_LF_END, start)
    crlf = buf.find(_CRLF_END, start)
    if lf < 0:
        return crlf + 3 if crlf >= 0 else -1
    if crlf < 0 or lf < crlf:
        return lf + 2
    return crlf + 3


class SseSanitizer:
    """Sanitizes one ``text/event-stream`` response, chunk by chunk as it arrives from upstream.

    Upstream chunks are re-framed into whole events; each event is rewritten line by line:
    ``data: [DONE]`` and blank lines are kept, a ``data:`` JSON chunk is reduced to the OpenAI chunk fields
    with ``model`` rewritten, a chunk carrying a provider error becomes ``data: {"error": ...}``, and every
    other line (comments, ``event:``, ``id:``, ``retry:``) is dropped. An event that cannot be read as
    chat completion chunks is passed through unchanged rather than lost.
    """

    __slots__ = ("_buf", "_model", "_passthrough", "_scan", "_tail")
    failed = False  # this sanitizer never ends a stream early (respond.StreamRewriter)

    def __init__(self, client_model: str) -> None:
        _check_model(client_model)
        self._model = client_model
        self._buf = bytearray()
        # Where the next blank-line search may start: everything before it was searched already.
        self._scan = 0
        # True while forwarding the rest of an oversized event untouched; _tail holds its last bytes
        # so a blank line split across chunks is still found.
        self._passthrough = False
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """Take the next upstream chunk; return the complete sanitized events it finished (may be b"")."""
        if not chunk:
            return b""
        if not self._buf and not self._passthrough and _find_end(chunk, 0) == len(chunk) <= MAX_EVENT_BYTES:
            # Most upstreams write one whole event per chunk: rewrite it without touching the buffer.
            return self._sanitize_event(bytes(chunk))
        out: list[bytes] = []
        if self._passthrough:
            chunk = self._continue_passthrough(chunk, out)
            if not chunk:
                return b"".join(out)

        buf = self._buf
        buf += chunk
        start = 0
        # Each pattern is searched once per feed and re-searched only after the event cut passes it,
        # so a chunk holding many events costs one pass over its bytes.
        lf = buf.find(_LF_END, self._scan)
        crlf = buf.find(_CRLF_END, self._scan)
        while lf >= 0 or crlf >= 0:
            end = lf + 2 if crlf < 0 or 0 <= lf < crlf else crlf + 3
            event = bytes(buf[start:end])
            # The size rule is applied to whole events too, so the output never depends on how
            # upstream happened to split its chunks.
            out.append(event if end - start > MAX_EVENT_BYTES else self._sanitize_event(event))
            start = end
            if 0 <= lf < start:
                lf = buf.find(_LF_END, start)
            if 0 <= crlf < start:
                crlf = buf.find(_CRLF_END, start)
        if start:
            del buf[:start]

        if len(buf) >= MAX_EVENT_BYTES:
            # The pending event is already longer than the cap, so it will not be rewritten. The Rust
            # gateway silently ends the stream here; we forward the buffered bytes unchanged instead and
            # keep forwarding this event's bytes until its blank line, then resume sanitizing. Memory
            # stays bounded and the client gets the whole stream rather than a truncated one.
            out.append(bytes(buf))
            self._tail = bytes(buf[-2:])
            self._passthrough = True
            buf.clear()
            self._scan = 0
        else:
            # A blank line completed by the next chunk starts at most two bytes before the end.
            self._scan = max(0, len(buf) - 2)
        return b"".join(out)

    def flush(self) -> bytes:
        """At upstream EOF: the unterminated last event, sanitized (b"" when there is none)."""
        if self._passthrough:
            # The oversized event's bytes were all forwarded as they came.
            self._passthrough = False
            self._tail = b""
            return b""
        if not self._buf:
            return b""
        event = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        return self._sanitize_event(event)

    def _continue_passthrough(self, chunk: bytes, out: list[bytes]) -> bytes:
        """Forward bytes of an oversized event; return the part of chunk after the event's end."""
        window = self._tail + chunk
        end = _find_end(window, 0)
        if end < 0:
            out.append(chunk)
            self._tail = window[-2:]
            return b""
        cut = end - len(self._tail)
        out.append(chunk[:cut])
        self._passthrough = False
        self._tail = b""
        return chunk[cut:]

    def _sanitize_event(self, event: bytes) -> bytes:
        body = event.rstrip(b"\r\n")
        # Complete events end with one blank line (two newlines); a tail flushed at EOF keeps what it had.
        newlines = event.count(b"\n", len(body))
        try:
            if b"\n" not in body:
                # The usual event is a single data line: skip the split and join.
                line = self._sanitize_line(body)
                return (line or b"") + b"\n" * newlines
            lines = []
            for raw in body.split(b"\n"):
                line = self._sanitize_line(raw[:-1] if raw.endswith(b"\r") else raw)
                if line is not None:
                    lines.append(line)
        except (orjson.JSONDecodeError, SanitizeError):
            # Not a chat completion chunk we understand: forwarding it as sent beats dropping it.
            return event
        # An event with nothing left (a keep-alive comment) still yields its blank line, which keeps
        # idle connections alive and is ignored by SSE parsers.
        return b"\n".join(lines) + b"\n" * newlines

    def _sanitize_line(self, line: bytes) -> bytes | None:
        """One line of an event, rewritten; None drops it. Raises when a data line is unreadable."""
        if not line.startswith(b"data:"):
            # Blank lines stay; comments, event:, id:, retry: and stray fields go.
            return line if not line else None
        payload = line[6:] if line.startswith(b"data: ") else line[5:]
        # The startswith test keeps the usual JSON chunk off the slower strip-and-compare path.
        if not payload.startswith(b"{") and payload.strip() == b"[DONE]":
            return line
        doc = orjson.loads(payload)
        if type(doc) is dict:
            error = doc.get("error")
            # error: null and error: {} are sent by some providers on healthy chunks.
            if type(error) is dict and ("message" in error or "code" in error):
                # The chunk wrapper goes, the provider's error object (its code included) stays, so
                # clients that look for a leading {"error" see it.
                return b"data: " + orjson.dumps({"error": error})
        return b"data: " + orjson.dumps(_rewrite(doc, self._model, "chat.completion.chunk", streaming=True))
