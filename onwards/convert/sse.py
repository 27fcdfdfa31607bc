"""Incremental Server-Sent Events framing: bytes in, whole events out, and the two encoders.

The reader keeps only the unfinished tail of the stream (at most one event), so a translator built on it
never buffers a whole response. Lines may end in LF, CRLF or CR, and a chunk may end anywhere, even
between the CR and LF of one line ending. Comment lines (":" first) and the id/retry fields are dropped:
neither protocol's clients need them after translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["MAX_EVENT_BYTES", "SseEvent", "SseReader", "SseTooLarge", "anthropic_event", "openai_data"]

# A single event larger than this is refused instead of growing the buffer without bound.
MAX_EVENT_BYTES = 4 * 1024 * 1024


class SseTooLarge(Exception):
    """One upstream event exceeded MAX_EVENT_BYTES."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # "" when the event had no event: field
    data: bytes  # data lines joined by "\n"


class SseReader:
    def __init__(self) -> None:
        self._tail = b""
        self._event = ""
        self._data: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buf = self._tail + chunk if self._tail else chunk
        out: list[SseEvent] = []
        pos = 0
        n = len(buf)
        cr = buf.find(b"\r")
        while pos < n:
            lf = buf.find(b"\n", pos)
            if cr != -1 and cr < pos:
                cr = buf.find(b"\r", pos)
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == n:
                    break  # a lone CR at the end may be the first half of CRLF: wait for the next byte
                end, pos_next = cr, cr + 2 if buf[cr + 1] == 0x0A else cr + 1
            elif lf != -1:
                end, pos_next = lf, lf + 1
            else:
                break
            self._line(buf[pos:end], out)
            pos = pos_next
        self._tail = buf[pos:]
        if len(self._tail) + self._size > MAX_EVENT_BYTES:
            raise SseTooLarge(f"an upstream event is larger than {MAX_EVENT_BYTES} bytes")
        return out

    def close(self) -> list[SseEvent]:
        """End of stream: a last event without its closing blank line is still delivered."""
        out: list[SseEvent] = []
        tail, self._tail = self._tail, b""
        if tail:
            self._line(tail.rstrip(b"\r"), out)
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[SseEvent]) -> None:
        if not line:
            if self._data:
                out.append(SseEvent(self._event, b"\n".join(self._data)))
            self._event = ""
            self._data = []
            self._size = 0
            return
        if line[0] == 0x3A:  # ":" comment
            return
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
            self._size += len(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")


def anthropic_event(payload: dict[str, Any]) -> bytes:
    """One Anthropic stream event: the event name repeats the payload's type, as the API sends it."""
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def openai_data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
