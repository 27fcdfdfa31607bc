"""Whole answers replayed as streams: each SDK assembles the replay back into the same answer."""

from __future__ import annotations

from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from onwards.convert.replay import chat_completion_stream, message_stream
from onwards.convert.sse import SseReader

MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [
        {"type": "thinking", "thinking": "hm", "signature": ""},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "reasoning_content": "hm",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}


def _payloads(raw: bytes) -> list[Any]:
    reader = SseReader()
    return [e.data for e in reader.feed(raw) + reader.close()]


def test_message_replay_assembles_to_the_message() -> None:
    snapshot = None
    bufs: dict[int, bytes] = {}
    for data in _payloads(message_stream(MESSAGE)):
        event = orjson.loads(data)
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    assert [b.type for b in snapshot.content] == ["thinking", "text", "tool_use"]
    assert snapshot.content[0].thinking == "hm" and snapshot.content[1].text == "Checking."
    assert snapshot.id == "msg_1" and snapshot.model == "m"
    assert snapshot.content[2].input == {"city": "Paris"} and snapshot.stop_reason == "tool_use"
    assert snapshot.usage.output_tokens == 7


def test_chat_replay_assembles_to_the_completion() -> None:
    datas = _payloads(chat_completion_stream(COMPLETION, include_usage=True))
    assert datas[-1] == b"[DONE]"
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for data in datas[:-1]:
        list(state.handle_chunk(ChatCompletionChunk.model_validate(orjson.loads(data))))
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking." and final.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        ("t1", "f", '{"a":1}')
    ]
    assert final.usage is not None and final.usage.total_tokens == 12


def test_chat_replay_without_usage_has_no_usage_chunk() -> None:
    chunks = [
        orjson.loads(d) for d in _payloads(chat_completion_stream(COMPLETION, include_usage=False))[:-1]
    ]
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)
