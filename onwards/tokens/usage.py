"""The usage a provider reported, from a JSON body or from an SSE stream as it passes.

Chat and completions report `usage.prompt_tokens` / `completion_tokens`; the Responses API reports
`input_tokens` / `output_tokens`, in the body or in its `response.completed` event; embeddings
report prompt tokens only. The stream reader sees the stream in whatever chunks the network cut
it into: events may be split anywhere, and only complete events are read.

When the gateway asked the provider for usage on the client's behalf (the client's stream did not
ask), the reader also takes out what asking added, so the client receives the stream the provider
would have sent it: the final usage chunk (no choices, a usage object) is dropped, and the
`"usage":null` that some providers (OpenAI) then put in every other chunk is removed.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

# An event longer than this without an end is not read for usage (it is forwarded all the same).
_MAX_PENDING = 1 << 20
_USAGE = b'"usage"'
_NULLS = (b',"usage":null', b', "usage": null', b',"usage": null')


class Usage(NamedTuple):
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def usage_of(obj: object) -> Usage | None:
    """The usage object of a decoded response body, chunk or Responses event, if it has one."""
    if type(obj) is not dict:
        return None
    usage = obj.get("usage")
    if usage is None:
        response = obj.get("response")
        if type(response) is dict:
            usage = response.get("usage")
    return _counts(usage)


def _counts(usage: object) -> Usage | None:
    """Prompt and completion tokens of a usage object, under either API's names."""
    if type(usage) is not dict:
        return None
    prompt = usage.get("prompt_tokens")
    if prompt is None:
        prompt = usage.get("input_tokens")
    completion = usage.get("completion_tokens")
    if completion is None:
        completion = usage.get("output_tokens")
    good_prompt = type(prompt) is int and prompt >= 0
    good_completion = type(completion) is int and completion >= 0
    if not (good_prompt or good_completion):
        return None
    return Usage(prompt if good_prompt else 0, completion if good_completion else 0)  # type: ignore[arg-type]


def usage_from_json(body: bytes) -> Usage | None:
    """The usage of a whole JSON response body; None when it has none or is not JSON.

    The body is not decoded whole: its usage object, which sits near the end of every OpenAI body,
    is cut out and decoded alone (a large embeddings body costs no more than a small one); the
    whole body is decoded only when that fails.
    """
    at = body.rfind(_USAGE)
    if at == -1:
        return None
    fragment = _object_after(body, at + len(_USAGE))
    if fragment is not None:
        try:
            return _counts(orjson.loads(fragment))
        except orjson.JSONDecodeError:
            pass
    try:
        return usage_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def _object_after(body: bytes, start: int) -> bytes | None:
    """The JSON object after the key that ends at `start` (`: {...}`), cut by counting braces.

    Usage objects hold numbers and nested objects, not strings with braces; a wrong cut only fails
    to decode, and the caller then decodes the whole body.
    """
    colon = body.find(b":", start, start + 16)
    if colon == -1:
        return None
    pos = body.find(b"{", colon, colon + 16)
    if pos == -1 or body[colon + 1 : pos].strip():
        return None
    begin = pos
    depth = 0
    while True:
        close = body.find(b"}", pos)
        if close == -1:
            return None
        opened = body.find(b"{", pos, close)
        if opened != -1:
            depth += 1
            pos = opened + 1
            continue
        depth -= 1
        pos = close + 1
        if depth == 0:
            return body[begin:pos]


def _event_data(event: bytes) -> bytes | None:
    """The joined `data:` lines of one SSE event."""
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    parts = [line[6:] if line[5:6] == b" " else line[5:] for line in lines]
    return parts[0] if len(parts) == 1 else b"\n".join(parts)


def _decode_event(event: bytes) -> object | None:
    data = _event_data(event)
    if data is None or data == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _next_end(data: bytes, start: int) -> int:
    """The index just past the first complete event from `start`, or -1."""
    lf = data.find(b"\n\n", start)
    crlf = data.find(b"\r\n\r\n", start)
    if crlf != -1 and (lf == -1 or crlf < lf):
        return crlf + 4
    return -1 if lf == -1 else lf + 2


def _last_end(data: bytes) -> int:
    """The index just past the last complete event of `data`, 0 when there is none."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf != -1 else 0, crlf + 4 if crlf != -1 else 0)


class StreamUsage:
    """Reads usage from an SSE stream chunk by chunk; with `strip`, takes out the injected usage.

    `feed` returns the bytes to send on (the chunk itself when not stripping), `flush` what is
    left at the end of the stream. `usage` is the last usage seen.
    """

    __slots__ = ("_pending", "strip", "usage")

    def __init__(self, strip: bool = False) -> None:
        self.strip = strip
        self.usage: Usage | None = None
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._pending and _USAGE not in chunk and chunk.endswith(b"\n\n"):
            return chunk  # whole events without usage: the common chunk, nothing to keep
        data = self._pending + chunk if self._pending else chunk
        if not self.strip:
            if _USAGE in data:
                self._read(data)
            else:
                # Only the incomplete last event is kept: a usage key may start at its end.
                rest = data[_last_end(data) :]
                self._pending = rest if len(rest) <= _MAX_PENDING else b""
            return chunk
        return self._split(data)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        if not self.strip:
            if rest and _USAGE in rest:
                self._take(rest)
            return b""
        if rest and self._take(rest):
            return b""
        return self._unnull(rest)

    def _read(self, data: bytes) -> None:
        """Observe the complete events of `data`; keep the incomplete rest for the next chunk."""
        start = 0
        while True:
            end = _next_end(data, start)
            if end == -1:
                break
            event = data[start:end]
            if _USAGE in event:
                self._take(event)
            start = end
        rest = data[start:]
        self._pending = rest if len(rest) <= _MAX_PENDING else b""

    def _split(self, data: bytes) -> bytes:
        """Forward the complete events of `data` without the injected usage; keep the rest."""
        out: list[bytes] = []
        start = 0
        while True:
            end = _next_end(data, start)
            if end == -1:
                break
            event = data[start:end]
            start = end
            if _USAGE in event and self._take(event):
                continue
            out.append(self._unnull(event))
        rest = data[start:]
        if len(rest) > _MAX_PENDING:
            # Not an SSE stream we can read; pass it on rather than hold it.
            out.append(rest)
            rest = b""
        self._pending = rest
        return b"".join(out)

    def _take(self, event: bytes) -> bool:
        """Record the usage of `event`; True when it is the final usage chunk (no choices)."""
        obj = _decode_event(event)
        usage = usage_of(obj)
        if usage is None:
            return False
        self.usage = usage
        assert isinstance(obj, dict)
        choices = obj.get("choices")
        return isinstance(choices, list) and not choices

    @staticmethod
    def _unnull(event: bytes) -> bytes:
        if _USAGE not in event:
            return event
        for pattern in _NULLS:
            event = event.replace(pattern, b"")
        return event
