"""OpenAI chunk SSE -> Anthropic SSE: per event, at every chunk split, and assembled by the Anthropic SDK."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from onwards.convert import ChatToMessagesStream
from onwards.convert.sse import SseReader


def _sse(*chunks: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    body.update(extra)
    return body


USAGE = _chunk({}, usage={"prompt_tokens": 11, "completion_tokens": 4}) | {"choices": []}


def _events(raw: bytes) -> list[dict[str, Any]]:
    reader = SseReader()
    out = []
    for event in reader.feed(raw) + reader.close():
        payload = orjson.loads(event.data)
        assert event.event == payload["type"]  # the event name always repeats the payload type
        out.append(payload)
    return out


def _translate(raw: bytes, cut: int | None = None) -> bytes:
    stream = ChatToMessagesStream("asked")
    if cut is None:
        return stream.feed(raw) + stream.close()
    return stream.feed(raw[:cut]) + stream.feed(raw[cut:]) + stream.close()


def _assemble(events: list[dict[str, Any]]) -> Any:
    snapshot = None
    bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] not in ("ping", "error"):
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    return snapshot


TEXT = _sse(
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo"}),
    _chunk({}, "stop"),
    USAGE,
)
TOOLS = _sse(
    _chunk({"content": "Let me check."}),
    _chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    _chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]}),
    _chunk({}, "tool_calls"),
    USAGE,
)
THINKING = _sse(
    _chunk({"reasoning_content": "Think"}),
    _chunk({"reasoning_content": "ing."}),
    _chunk({"content": "Answer"}),
    _chunk({}, "length"),
)


def test_text_stream_event_by_event() -> None:
    events = _events(_translate(TEXT))
    assert [e["type"] for e in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert start["id"] == "msg_1" and start["model"] == "up" and start["content"] == []
    assert start["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert events[2] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[3]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[5] == {"type": "content_block_stop", "index": 0}
    assert events[6]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[6]["usage"]["input_tokens"] == 11 and events[6]["usage"]["output_tokens"] == 4


def test_tool_stream_opens_one_block_per_call() -> None:
    events = _events(_translate(TOOLS))
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"] for s in starts] == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_a", "name": "f", "input": {}},
        {"type": "tool_use", "id": "call_b", "name": "g", "input": {}},
    ]
    json_deltas = [
        e for e in events if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    ]
    assert [(d["index"], d["delta"]["partial_json"]) for d in json_deltas] == [
        (1, '{"city":'),
        (1, '"Paris"}'),
        (2, "{}"),
    ]
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    message = _assemble(events)
    assert message.stop_reason == "tool_use"
    assert message.content[1].input == {"city": "Paris"} and message.content[2].input == {}


def test_thinking_stream() -> None:
    events = _events(_translate(THINKING))
    assert events[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[3]["delta"] == {"type": "thinking_delta", "thinking": "Think"}
    message = _assemble(events)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Thinking." and message.content[1].text == "Answer"
    assert message.stop_reason == "max_tokens"


@pytest.mark.parametrize("raw", [TEXT, TOOLS, THINKING], ids=["text", "tools", "thinking"])
def test_every_split_gives_the_same_stream(raw: bytes) -> None:
    whole = _translate(raw)
    for cut in range(len(raw) + 1):
        assert _translate(raw, cut) == whole, f"split at {cut}"


def test_byte_by_byte_is_incremental() -> None:
    stream = ChatToMessagesStream("asked")
    first_text_at = None
    out = b""
    for i in range(len(TEXT)):
        out += stream.feed(TEXT[i : i + 1])
        if first_text_at is None and b"text_delta" in out:
            first_text_at = i
    out += stream.close()
    assert out == _translate(TEXT)
    # The first delta is out as soon as its chunk event is complete, long before the end of the body.
    assert first_text_at is not None and first_text_at < len(TEXT) // 2


def test_crlf_framing_from_upstream() -> None:
    assert _translate(TEXT.replace(b"\n", b"\r\n")) == _translate(TEXT)


STOP_CASES = [
    ("stop", None, "end_turn", None),
    ("length", None, "max_tokens", None),
    ("tool_calls", None, "tool_use", None),
    ("content_filter", None, "refusal", None),
    ("stop", "END", "stop_sequence", "END"),
]


@pytest.mark.parametrize(("finish", "matched", "stop_reason", "sequence"), STOP_CASES)
def test_stop_reasons(finish: str, matched: str | None, stop_reason: str, sequence: str | None) -> None:
    chunk = _chunk({"content": "x"}, finish)
    chunk["choices"][0]["stop_reason"] = matched
    events = _events(_translate(_sse(chunk)))
    assert events[-2]["delta"] == {"stop_reason": stop_reason, "stop_sequence": sequence}


def test_cached_prompt_tokens() -> None:
    usage = _chunk(
        {},
        usage={"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 60}},
    ) | {"choices": []}
    events = _events(_translate(_sse(_chunk({"content": "x"}, "stop"), usage)))
    assert events[-2]["usage"] == {
        "input_tokens": 40,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }


def test_finish_without_done_still_completes() -> None:
    events = _events(_translate(_sse(_chunk({"content": "x"}, "stop"), done=False)))
    assert [e["type"] for e in events][-2:] == ["message_delta", "message_stop"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_sse(_chunk({"content": "x"}), done=False), "ended before"),
        (b"", "ended before"),
        (b"data: {not json\n\n", "unreadable"),
        (
            _sse({"error": {"message": "upstream broke", "type": "server_error"}}, done=False),
            "upstream broke",
        ),
    ],
    ids=["cut off", "empty", "bad json", "error event"],
)
def test_failures_end_with_an_error_event(raw: bytes, message: str) -> None:
    events = _events(_translate(raw))
    assert events[-1]["type"] == "error" and message in events[-1]["error"]["message"]
    assert events[-1]["error"]["type"] in ("api_error", "invalid_request_error")
    assert not any(e["type"] == "message_stop" for e in events)


def test_nothing_after_the_end() -> None:
    stream = ChatToMessagesStream("asked")
    stream.feed(TEXT)
    assert stream.feed(_sse(_chunk({"content": "late"}))) == b""
    assert stream.close() == b""


def test_model_falls_back_to_the_asked_name() -> None:
    chunk = _chunk({"content": "x"}, "stop")
    del chunk["model"]
    assert _events(_translate(_sse(chunk)))[0]["message"]["model"] == "asked"


def test_calls_that_all_say_index_0_are_told_apart_by_their_ids() -> None:
    raw = _sse(
        _chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":1}'}}]}),
        _chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "g", "arguments": '{"y":2}'}}]}),
        _chunk({}, "tool_calls"),
    )
    message = _assemble(_events(_translate(raw)))
    assert [(b.id, b.name, b.input) for b in message.content] == [("a", "f", {"x": 1}), ("b", "g", {"y": 2})]
