"""Strict mode's stream sanitization: each SSE event of a 2xx stream rebuilt as it arrives.

Upstream chunks are cut into whole events (ending at a blank line, `\\n\\n` or `\\r\\n\\r\\n`),
however the network split them. In each event `data: [DONE]` and blank lines are kept,
every `data:` chunk is rebuilt through the surface's chunk schema (success.sanitize_chunk),
a chunk carrying a provider error becomes `data: {"error": ...}` (errors.sse_error_event),
and every other line (comments, `event:`, `id:`, `retry:`) is dropped so no provider
metadata leaks. An event that cannot be read, or is larger than MAX_EVENT_BYTES, is never
passed through: the stream ends with one standard 502 error event (the Rust gateway cuts
the connection instead, which clients see as a truncated stream). After that `failed` is
true and further input is ignored, so the caller can stop reading the upstream.
"""

from __future__ import annotations

import orjson

from onwards.strict.errors import sse_error_event, standard_type_and_message
from onwards.strict.success import SuccessBodyError, Surface, fallback_id, sanitize_chunk

# A strict stream event larger than this cannot be vouched for and ends the stream.
MAX_EVENT_BYTES = 1024 * 1024

_FAILED_EVENT = (
    b"data: "
    + orjson.dumps(
        {
            "error": {
                "message": standard_type_and_message(502)[1],
                "type": standard_type_and_message(502)[0],
                "param": None,
                "code": 502,
            }
        }
    )
    + b"\n\n"
)


class StrictStream:
    """Sanitizes one strict-mode stream for `surface`, answering as `model`."""

    __slots__ = ("_buf", "_id", "_model", "_surface", "_trusted", "failed", "problem")

    def __init__(self, surface: Surface, model: str, *, trusted: bool) -> None:
        self._surface = surface
        self._model = model
        self._trusted = trusted
        self._id = fallback_id(surface)  # one generated id for every chunk that lacks its own
        self._buf = bytearray()
        self.failed = False
        self.problem = ""  # why the stream was ended, for the log line (never quotes data)

    def feed(self, chunk: bytes) -> bytes:
        """The next upstream bytes in; the rebuilt events they complete out (may be b"")."""
        if self.failed or not chunk:
            return b""
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        while True:
            end = _event_end(buf)
            if end < 0:
                break
            event = bytes(buf[:end])
            del buf[:end]
            out.append(self._event(event))
            if self.failed:
                break
        if not self.failed and len(buf) > MAX_EVENT_BYTES:
            out.append(self._fail("an event is larger than the strict stream limit"))
        return b"".join(out)

    def flush(self) -> bytes:
        """End of the upstream body: a last event without its blank line is still sent."""
        if self.failed or not self._buf:
            return b""
        event = bytes(self._buf)
        self._buf.clear()
        return self._event(event)

    def _fail(self, problem: str) -> bytes:
        self.failed = True
        self.problem = problem
        self._buf.clear()
        return _FAILED_EVENT

    def _event(self, event: bytes) -> bytes:
        text = event.decode("utf-8", errors="replace")
        lines: list[str] = []
        for line in text.splitlines():
            if line.startswith("data:"):
                data = line[6:] if line.startswith("data: ") else line[5:]
                if data.strip() == "[DONE]":
                    lines.append("data: [DONE]")
                    continue
                rebuilt = self._data(data)
                if rebuilt is None:
                    return self._fail(self.problem)
                lines.append(rebuilt)
            elif not line:
                lines.append("")
            # Anything else (comments, event:, id:, retry:) is provider metadata: dropped.
        out = "\n".join(lines)
        # Keep the event's own ending so the framing the client sees matches upstream's.
        trailing = len(text) - len(text.rstrip("\r\n"))
        wanted = text[len(text) - trailing :].count("\n")
        have = len(out) - len(out.rstrip("\n"))
        return (out + "\n" * max(0, wanted - have)).encode()

    def _data(self, data: str) -> str | None:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.problem = "a data line is not JSON"
            return None
        error = sse_error_event(value, self._trusted)
        if error is not None:
            return error.decode()
        try:
            chunk = sanitize_chunk(self._surface, value, self._model, self._id)
        except SuccessBodyError as exc:
            self.problem = str(exc)
            return None
        return "data: " + orjson.dumps(chunk).decode()


def _event_end(buf: bytearray) -> int:
    """Index just past the first event's blank line, or -1."""
    lf = buf.find(b"\n\n")
    crlf = buf.find(b"\r\n\r\n")
    if lf < 0 and crlf < 0:
        return -1
    if crlf < 0 or (0 <= lf < crlf):
        return lf + 2
    return crlf + 4
