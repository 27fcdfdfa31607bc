"""Anthropic SSE -> OpenAI chunk SSE: per event, at every chunk boundary, and assembled by the OpenAI SDK."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from onwards.convert import MessagesToChatStream
from onwards.convert.sse import SseReader


def _ev(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 3},
    },
}
PING = {"type": "ping"}
STOP = {"type": "message_stop"}


def _delta(stop: str, output: int = 6) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": output},
    }


def _block(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _bdelta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _bstop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


TEXT = b"".join(
    _ev(e)
    for e in [
        START,
        _block(0, {"type": "text", "text": ""}),
        PING,
        _bdelta(0, {"type": "text_delta", "text": "Hel"}),
        _bdelta(0, {"type": "text_delta", "text": "lo"}),
        _bstop(0),
        _delta("end_turn"),
        STOP,
    ]
)
TOOLS = b"".join(
    _ev(e)
    for e in [
        START,
        _block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        _bdelta(0, {"type": "thinking_delta", "thinking": "hm"}),
        _bdelta(0, {"type": "signature_delta", "signature": "sig"}),
        _bstop(0),
        _block(1, {"type": "text", "text": ""}),
        _bdelta(1, {"type": "text_delta", "text": "Checking."}),
        _bstop(1),
        _block(2, {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}),
        _bdelta(2, {"type": "input_json_delta", "partial_json": '{"city":'}),
        _bdelta(2, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
        _bstop(2),
        _block(3, {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}),
        _bstop(3),
        _delta("tool_use"),
        STOP,
    ]
)


def _translate(raw: bytes, include_usage: bool = True, cut: int | None = None) -> bytes:
    stream = MessagesToChatStream("asked", include_usage)
    if cut is None:
        return stream.feed(raw) + stream.close()
    return stream.feed(raw[:cut]) + stream.feed(raw[cut:]) + stream.close()


def _chunks(raw: bytes) -> list[Any]:
    reader = SseReader()
    events = reader.feed(raw) + reader.close()
    assert events[-1].data == b"[DONE]"
    return [orjson.loads(e.data) for e in events[:-1]]


def _assemble(chunks: list[dict[str, Any]]) -> Any:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        list(state.handle_chunk(ChatCompletionChunk.model_validate(chunk)))
    return state.get_final_completion()


def test_text_stream_chunk_by_chunk() -> None:
    chunks = _chunks(_translate(TEXT))
    assert [c["choices"][0]["delta"] if c["choices"] else "usage" for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
        "usage",
    ]
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert all(
        c["id"] == "chatcmpl-1" and c["model"] == "claude-x" and c["object"] == "chat.completion.chunk"
        for c in chunks
    )
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 15,
        "completion_tokens": 6,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    completion = _assemble(chunks)
    assert completion.choices[0].message.content == "Hello"


def test_usage_chunk_only_when_asked() -> None:
    chunks = _chunks(_translate(TEXT, include_usage=False))
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)


def test_tools_and_thinking() -> None:
    chunks = _chunks(_translate(TOOLS))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert {"reasoning_content": "hm"} in deltas
    assert deltas[3] == {
        "tool_calls": [
            {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "f", "arguments": ""}}
        ]
    }
    assert deltas[4] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}
    assert deltas[6]["tool_calls"][0]["index"] == 1
    message = _assemble(chunks).choices[0]
    assert message.finish_reason == "tool_calls"
    assert message.message.content == "Checking."
    calls = message.message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("toolu_a", "f", '{"city":"Paris"}'),
        ("toolu_b", "g", ""),
    ]


@pytest.mark.parametrize("raw", [TEXT, TOOLS], ids=["text", "tools"])
def test_every_split_gives_the_same_stream(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("onwards.convert.stream_to_chat.time.time", lambda: 1000.0)
    whole = _translate(raw)
    for cut in range(len(raw) + 1):
        assert _translate(raw, cut=cut) == whole, f"split at {cut}"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    raw = _ev(START) + _ev(_delta(stop)) + _ev(STOP)
    assert _chunks(_translate(raw))[-2]["choices"][0]["finish_reason"] == finish


def test_message_delta_without_stop_stop_is_not_an_end() -> None:
    raw = _ev(START) + _ev({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 2}})
    chunks = _chunks(_translate(raw))
    assert "error" in chunks[-1]


def test_stop_reason_without_message_stop_still_completes() -> None:
    chunks = _chunks(_translate(_ev(START) + _ev(_delta("end_turn"))))
    assert chunks[-1]["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (
            _ev(START)
            + _ev({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            "overloaded_error",
            "Overloaded",
        ),
        (_ev(START), "api_error", "ended before"),
        (b"", "api_error", "ended before"),
        (b"event: message_start\ndata: {oops\n\n", "api_error", "unreadable"),
    ],
    ids=["error event", "cut off", "empty", "bad json"],
)
def test_failures_end_with_an_error_chunk(raw: bytes, code: str, message: str) -> None:
    chunks = _chunks(_translate(raw))
    error = chunks[-1]["error"]
    assert error["code"] == code and message in error["message"]


def test_server_tool_input_is_dropped() -> None:
    raw = b"".join(
        _ev(e)
        for e in [
            START,
            _block(0, {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}),
            _bdelta(0, {"type": "input_json_delta", "partial_json": "{}"}),
            _bstop(0),
            _delta("end_turn"),
            STOP,
        ]
    )
    deltas = [c["choices"][0]["delta"] for c in _chunks(_translate(raw)) if c["choices"]]
    assert deltas == [{"role": "assistant", "content": ""}, {}]
