"""The built-in mock provider: a provider with `"url": "mock://"` is answered in this process.

Rule: no socket and no upstream; the answer is built from the request alone, deterministically
(the same request gets the same text, token counts and embedding), so a fresh machine with no key
and no network still gets OpenAI-shaped answers. The builders are pure functions; `MockResponse`
carries their bytes through the same seam an aiohttp response takes, so routing, limits, headers,
sanitizing, streaming and metrics treat a mock answer exactly like a real one.

Answered: `POST .../chat/completions` (whole, or Server-Sent Events when `"stream": true`, with a
final usage chunk when `stream_options.include_usage` is true, as OpenAI does), `POST
.../embeddings` (floats or base64), `GET .../models`. Anything else gets a 404 in OpenAI's error
shape. Token counts are whitespace-separated words: an approximation, never a real tokenizer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from onwards.config.model import MockSpec
from onwards.errors import error_body

OWNER = "onwards-mock"
_JSON = (b"Content-Type", b"application/json")
_SSE = (b"Content-Type", b"text/event-stream")
_NO_CACHE = (b"Cache-Control", b"no-cache")
_MAX_DIMENSIONS = 4096


# --------------------------------------------------------------------------------------------
# Pure builders


def message_text(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def count_tokens(text: str) -> int:
    return len(text.split())


def prompt_tokens(messages: Sequence[object]) -> int:
    return sum(count_tokens(message_text(m.get("content"))) for m in messages if isinstance(m, dict))


def reply_text(spec: MockSpec, messages: Sequence[object]) -> str:
    """The configured reply, or an echo of the last user message."""
    if spec.reply is not None:
        return spec.reply
    last = ""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            last = message_text(message.get("content"))
    said = " ".join(last.split())
    return (
        f"This is the Onwards mock provider. You said: {said}"
        if said
        else "This is the Onwards mock provider."
    )


def _max_tokens(body: dict[str, object]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def completion_words(spec: MockSpec, body: dict[str, object]) -> tuple[list[str], str]:
    """The reply as words, cut at max_tokens, and the finish reason that cut implies."""
    messages = body.get("messages")
    words = reply_text(spec, messages if isinstance(messages, list) else []).split()
    limit = _max_tokens(body)
    if limit is not None and len(words) > limit:
        return words[:limit], "length"
    return words, "stop"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(
    body: dict[str, object], model: str, spec: MockSpec, *, ident: str, created: int
) -> dict[str, object]:
    words, finish = completion_words(spec, body)
    messages = body.get("messages")
    prompt = prompt_tokens(messages if isinstance(messages, list) else [])
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage(prompt, len(words)),
        "system_fingerprint": OWNER,
    }


def _chunk(ident: str, created: int, model: str, delta: dict[str, object], finish: str | None) -> bytes:
    event = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": OWNER,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


def chat_stream_events(
    body: dict[str, object], model: str, spec: MockSpec, *, ident: str, created: int
) -> list[bytes]:
    """Every SSE event of a streamed answer, `data: [DONE]` last: one word per content chunk."""
    words, finish = completion_words(spec, body)
    events = [_chunk(ident, created, model, {"role": "assistant", "content": ""}, None)]
    for i, word in enumerate(words):
        events.append(_chunk(ident, created, model, {"content": word if i == 0 else " " + word}, None))
    events.append(_chunk(ident, created, model, {}, finish))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        messages = body.get("messages")
        prompt = prompt_tokens(messages if isinstance(messages, list) else [])
        last = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": OWNER,
            "choices": [],
            "usage": usage(prompt, len(words)),
        }
        events.append(b"data: " + orjson.dumps(last) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector derived from the text's hash: equal texts embed equally, others differ."""
    raw = b""
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(f"{counter}\0{text}".encode()).digest()
        counter += 1
    values = [
        (int.from_bytes(raw[4 * i : 4 * i + 4], "little") / 0xFFFFFFFF) * 2 - 1 for i in range(dimensions)
    ]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Rounded through float32, so the float and base64 encodings carry the same numbers.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


class MockRequestError(ValueError):
    """The request is malformed for the endpoint; the message goes into a 400 body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def embedding_inputs(value: object) -> list[str]:
    """`input` as a list of texts; token-id inputs are embedded by their digits."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise MockRequestError("'input' must be a string, a list of strings or a list of token ids.", "input")


def embeddings(body: dict[str, object], model: str, spec: MockSpec) -> dict[str, object]:
    texts = embedding_inputs(body.get("input"))
    dims = body.get("dimensions", spec.embedding_dimensions)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= _MAX_DIMENSIONS:
        raise MockRequestError(f"'dimensions' must be an integer from 1 to {_MAX_DIMENSIONS}.", "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise MockRequestError("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    data = []
    for index, text in enumerate(texts):
        vector = embedding_vector(text, dims)
        embedding: object = (
            base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if encoding == "base64" else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(count_tokens(t) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models_list(model: str) -> dict[str, object]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": OWNER}]}


# --------------------------------------------------------------------------------------------
# The response object


class MockContent:
    """`content.readany()` over prepared chunks, pausing `delay` seconds before every one but the first."""

    __slots__ = ("_chunks", "_delay", "_next")

    def __init__(self, chunks: list[bytes], delay: float) -> None:
        self._chunks = chunks
        self._delay = delay
        self._next = 0

    async def readany(self) -> bytes:
        index = self._next
        if index >= len(self._chunks):
            return b""
        if index and self._delay > 0:
            await asyncio.sleep(self._delay)
        self._next = index + 1
        return self._chunks[index]

    def rest(self) -> bytes:
        data = b"".join(self._chunks[self._next :])
        self._next = len(self._chunks)
        return data


class MockHeaders:
    """The `headers.get(name, default)` of a response, case-insensitive like aiohttp's."""

    __slots__ = ("_values",)

    def __init__(self, raw: tuple[tuple[bytes, bytes], ...]) -> None:
        self._values = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}

    def get(self, key: str, default: str = "", /) -> str:
        return self._values.get(key.lower(), default)


class MockResponse:
    """What the request path reads from an upstream answer (aiohttp.ClientResponse's subset)."""

    __slots__ = ("content", "content_length", "headers", "raw_headers", "released", "status")

    def __init__(
        self,
        status: int,
        raw_headers: tuple[tuple[bytes, bytes], ...],
        chunks: list[bytes],
        delay: float = 0.0,
    ) -> None:
        self.status = status
        self.content = MockContent(chunks, delay)
        is_stream = any(value == _SSE[1] for name, value in raw_headers if name == _SSE[0])
        self.content_length: int | None = None if is_stream else sum(map(len, chunks))
        if self.content_length is not None:
            raw_headers = (*raw_headers, (b"Content-Length", str(self.content_length).encode()))
        self.raw_headers = raw_headers
        self.headers = MockHeaders(raw_headers)
        self.released = False

    async def read(self) -> bytes:
        return self.content.rest()

    def release(self) -> None:
        self.released = True


def _json_response(status: int, payload: object) -> MockResponse:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return MockResponse(status, (_JSON,), [body])


def _error(status: int, message: str, code: str, param: str | None = None) -> MockResponse:
    return _json_response(status, error_body(message, "invalid_request_error", code, param))


# --------------------------------------------------------------------------------------------
# The provider


@dataclass(frozen=True, slots=True)
class MockProvider:
    """One configured mock provider; built once per config load, shared by every request."""

    spec: MockSpec
    default_model: str  # answered when the request names none (GET /models)

    async def request(self, method: str, path: str, body: bytes) -> MockResponse:
        """Answer one request; `path` is the request path, its query ignored."""
        if self.spec.delay_ms > 0:
            await asyncio.sleep(self.spec.delay_ms / 1000)
        return self.answer(method, path.split("?", 1)[0].rstrip("/"), body)

    def answer(self, method: str, path: str, body: bytes) -> MockResponse:
        if path.endswith("/models") or path == "models":
            if method != "GET":
                return _error(405, f"{method} is not allowed on /models.", "method_not_allowed")
            return _json_response(200, models_list(self.default_model))
        for suffix in ("chat/completions", "embeddings"):
            if path.endswith(suffix):
                if method != "POST":
                    return _error(405, f"{method} is not allowed on /{suffix}.", "method_not_allowed")
                return self.post(suffix, body)
        return _error(
            404,
            "The mock provider answers POST /chat/completions, POST /embeddings and GET /models only.",
            "not_found",
        )

    def post(self, endpoint: str, raw: bytes) -> MockResponse:
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object.", "bad_request")
        model = body.get("model")
        model = model if isinstance(model, str) and model else self.default_model
        try:
            if endpoint == "embeddings":
                return _json_response(200, embeddings(body, model, self.spec))
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise MockRequestError("'messages' must be a non-empty list.", "messages")
        except MockRequestError as exc:
            return _error(400, str(exc), "invalid_value", exc.param)
        ident = f"chatcmpl-mock-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.get("stream") is True:
            events = chat_stream_events(body, model, self.spec, ident=ident, created=created)
            return MockResponse(200, (_SSE, _NO_CACHE), events, self.spec.stream_delay_ms / 1000)
        return _json_response(200, chat_completion(body, model, self.spec, ident=ident, created=created))
