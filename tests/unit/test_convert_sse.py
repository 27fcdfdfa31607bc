"""SSE framing: every line ending, comments, multi-line data, and chunks split at every byte."""

from __future__ import annotations

import pytest

from onwards.convert import sse
from onwards.convert.sse import SseEvent, SseReader, SseTooLarge, anthropic_event, openai_data


def _read_split(raw: bytes, cut: int) -> list[SseEvent]:
    reader = SseReader()
    return reader.feed(raw[:cut]) + reader.feed(raw[cut:]) + reader.close()


def _read_bytewise(raw: bytes) -> list[SseEvent]:
    reader = SseReader()
    out: list[SseEvent] = []
    for i in range(len(raw)):
        out += reader.feed(raw[i : i + 1])
    return out + reader.close()


CASES = [
    ("lf", b"event: a\ndata: 1\n\ndata: 2\n\n", [SseEvent("a", b"1"), SseEvent("", b"2")]),
    ("crlf", b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n", [SseEvent("a", b"1"), SseEvent("", b"2")]),
    ("cr", b"event: a\rdata: 1\r\rdata: 2\r\r", [SseEvent("a", b"1"), SseEvent("", b"2")]),
    ("mixed", b"data: 1\r\n\ndata: 2\n\r\n", [SseEvent("", b"1"), SseEvent("", b"2")]),
    ("comment", b": keep-alive\n\ndata: x\n\n", [SseEvent("", b"x")]),
    ("multi data", b"data: a\ndata: b\n\n", [SseEvent("", b"a\nb")]),
    ("no space", b"data:x\n\n", [SseEvent("", b"x")]),
    ("id retry dropped", b"id: 7\nretry: 10\ndata: x\n\n", [SseEvent("", b"x")]),
    ("no final blank", b"data: 1\n\ndata: [DONE]\n", [SseEvent("", b"1"), SseEvent("", b"[DONE]")]),
    ("no final newline", b"data: [DONE]", [SseEvent("", b"[DONE]")]),
    ("utf8", 'data: {"t":"héllo ✓"}\n\n'.encode(), [SseEvent("", '{"t":"héllo ✓"}'.encode())]),
    ("event without data", b"event: ping\n\ndata: x\n\n", [SseEvent("", b"x")]),
]


@pytest.mark.parametrize(("name", "raw", "expected"), CASES, ids=[c[0] for c in CASES])
def test_framing_at_every_split(name: str, raw: bytes, expected: list[SseEvent]) -> None:
    for cut in range(len(raw) + 1):
        assert _read_split(raw, cut) == expected, f"split at {cut}"
    assert _read_bytewise(raw) == expected


def test_lone_cr_at_chunk_end_waits_for_the_next_byte() -> None:
    reader = SseReader()
    assert reader.feed(b"data: 1\r") == []
    assert reader.feed(b"\n") == []  # CRLF is one line ending, not a line and a blank line
    assert reader.feed(b"\r\n") == [SseEvent("", b"1")]


def test_event_larger_than_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 64)
    reader = SseReader()
    reader.feed(b"data: " + b"x" * 40 + b"\n")
    with pytest.raises(SseTooLarge):
        reader.feed(b"data: " + b"y" * 40)


def test_cap_counts_one_event_not_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 64)
    reader = SseReader()
    for _ in range(20):
        assert reader.feed(b"data: " + b"x" * 40 + b"\n\n") == [SseEvent("", b"x" * 40)]


def test_encoders() -> None:
    assert anthropic_event({"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert openai_data({"a": 1}) == b'data: {"a":1}\n\n'
