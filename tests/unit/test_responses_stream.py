"""Chat SSE -> Responses SSE events: event order per case, the same events whatever the chunk
boundaries, every event accepted by the official SDK's event models."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from onwards.responses import convert
from onwards.responses.stream import ChatStreamTranslator, Sequencer, SSEParser, encode_event, lifecycle_event

EVENTS = TypeAdapter(ResponseStreamEvent)


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **top: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "model": "m", "created": 1, "choices": choices, **top}


def _call(index: int, call_id: str | None, name: str | None, args: str) -> dict[str, Any]:
    fn: dict[str, Any] = {"arguments": args}
    if name is not None:
        fn["name"] = name
    call: dict[str, Any] = {"index": index, "function": fn}
    if call_id is not None:
        call["id"] = call_id
    return {"tool_calls": [call]}


TEXT = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo"}),
    _chunk({}, "stop"),
    _chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
]
REASONING_THEN_TEXT = [
    _chunk({"reasoning_content": "think"}),
    _chunk({"reasoning_content": "ing"}),
    _chunk({"content": "4"}),
    _chunk({}, "stop"),
]
TEXT_THEN_CALLS = [
    _chunk({"content": "checking"}),
    _chunk(_call(0, "c1", "weather", '{"city"')),
    _chunk(_call(0, None, None, ':"x"}')),
    _chunk(_call(1, "c2", "srv", "{}")),
    _chunk({}, "tool_calls"),
]

CASES: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    (
        "text",
        TEXT,
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ],
    ),
    (
        "reasoning then text",
        REASONING_THEN_TEXT,
        [
            "response.output_item.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ],
    ),
    (
        "text then a client call; the server tool call stays hidden",
        TEXT_THEN_CALLS,
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ],
    ),
]


def _sse(chunks: list[dict[str, Any]], crlf: bool = False) -> bytes:
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    body = b"".join(b"data: " + orjson.dumps(c) + sep for c in chunks)
    return b": keep-alive" + sep + body + b"data: [DONE]" + sep


def _translate(raw: bytes, step: int) -> tuple[list[dict[str, Any]], ChatStreamTranslator]:
    seq = Sequencer()
    translator = ChatStreamTranslator(seq, hidden_tools={"srv"})
    parser = SSEParser()
    events: list[dict[str, Any]] = []
    for i in range(0, len(raw), step):
        for data in parser.feed(raw[i : i + step]):
            events += translator.feed_data(data)
    for data in parser.close():
        events += translator.feed_data(data)
    events += translator.finish()
    return events, translator


@pytest.mark.parametrize(("name", "chunks", "types"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("step", [1, 3, 17, 10_000])
@pytest.mark.parametrize("crlf", [False, True])
def test_events_in_order_whatever_the_chunk_boundaries(
    name: str, chunks: list[dict[str, Any]], types: list[str], step: int, crlf: bool
) -> None:
    events, translator = _translate(_sse(chunks, crlf), step)
    assert [e["type"] for e in events] == types
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENTS.validate_python(event)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert translator.items == done


def test_reassembled_completion_matches_the_stream() -> None:
    _, translator = _translate(_sse(TEXT_THEN_CALLS), 5)
    completion = translator.completion()
    message = completion["choices"][0]["message"]
    assert message["content"] == "checking"
    assert [c["function"] for c in message["tool_calls"]] == [
        {"name": "weather", "arguments": '{"city":"x"}'},
        {"name": "srv", "arguments": "{}"},
    ]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    # The non-streaming conversion of the reassembled completion gives the same visible items.
    strip = [{k: v for k, v in i.items() if k != "id"} for i in translator.items]
    again = convert.completion_to_items(completion, hidden_tools={"srv"})
    assert [{k: v for k, v in i.items() if k != "id"} for i in again] == strip


def test_usage_and_reasoning_reassembled() -> None:
    _, translator = _translate(_sse(TEXT), 2)
    assert translator.completion()["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    _, translator = _translate(_sse(REASONING_THEN_TEXT), 2)
    assert translator.completion()["choices"][0]["message"]["reasoning_content"] == "thinking"


def test_indexes_and_sequence_continue_across_model_calls() -> None:
    seq = Sequencer()
    first = ChatStreamTranslator(seq)
    events = [e for c in TEXT for e in first.feed(c)] + first.finish()
    second = ChatStreamTranslator(seq)
    events += [e for c in TEXT for e in second.feed(c)] + second.finish()
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == [0, 1]


def test_length_finish_marks_items_incomplete() -> None:
    _, translator = _translate(_sse([_chunk({"content": "cut"}), _chunk({}, "length")]), 4)
    assert translator.items[0]["status"] == "incomplete"


def test_arguments_before_the_name_are_not_lost() -> None:
    chunks = [
        _chunk(_call(0, "c1", None, '{"a":')),
        _chunk(_call(0, None, "f", "1}")),
        _chunk({}, "tool_calls"),
    ]
    events, translator = _translate(_sse(chunks), 7)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert deltas == '{"a":1}'
    assert translator.items[0]["arguments"] == '{"a":1}'


def test_an_embedded_error_is_recorded_not_emitted() -> None:
    events, translator = _translate(_sse([_chunk({"content": "a"}), {"error": {"message": "overloaded"}}]), 9)
    assert translator.error == {"message": "overloaded"}
    assert all(e["type"] != "error" for e in events)


def test_parser_handles_multiline_data_comments_and_a_missing_final_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b": c\n\nevent: x\ndata: a\ndata: b\n\nid: 1\n\ndata: tail") == ["a\nb"]
    assert parser.close() == ["tail"]
    assert parser.close() == []


def test_encoded_event_is_named_sse() -> None:
    seq = Sequencer()
    event = lifecycle_event(seq, "response.created", convert.build_response({"model": "m"}, "resp_1"))
    raw = encode_event(event)
    assert raw.startswith(b"event: response.created\ndata: {")
    assert raw.endswith(b"\n\n")
    EVENTS.validate_python(orjson.loads(raw.split(b"data: ", 1)[1]))
