"""Strict success sanitization (unary bodies and stream events), after the Rust onwards'
strict/handlers.rs tests: unknown fields stripped, model rewritten, back-fill, positional
indexes, one fallback id per stream, embedded errors in streams, comment lines stripped."""

from __future__ import annotations

import orjson
import pytest

from onwards.strict.stream import StrictStream
from onwards.strict.success import SuccessBodyError, sanitize_success

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4-turbo-2024-04-09",
    "provider": "openrouter",
    "cost": 0.001,
    "internal_id": "x",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "provider_extension": {"a": 1}},
            "finish_reason": "stop",
            "stop_reason": 42,
            "native_finish_reason": "end",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost": 9},
}


def chat(body: dict, model: str = "gpt-4") -> dict:
    return orjson.loads(sanitize_success("chat", orjson.dumps(body), model))


def test_chat_success_strips_unknown_fields_and_rewrites_model():
    out = chat(CHAT)
    assert out == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "provider_extension": {"a": 1}},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def test_chat_success_back_fills_id_object_index_and_role():
    out = chat({"choices": [{"message": {"content": "a"}}, {"message": {"content": "b"}}]})
    assert out["id"].startswith("chatcmpl-")
    assert out["object"] == "chat.completion"
    assert out["created"] == 0
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "a"}


def test_chat_reasoning_spelling_is_canonicalised():
    out = chat({"choices": [{"message": {"role": "assistant", "content": "a", "reasoning": "think"}}]})
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "a", "reasoning_content": "think"}


def test_null_like_tool_call_arguments_become_an_empty_object():
    message = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}],
    }
    out = chat({"choices": [{"message": message}]})
    assert out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"choices": [{"index": 0}]}',
        b'{"id": null, "choices": []}',
        b'{"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": 1.5}}',
    ],
)
def test_a_success_body_that_does_not_fit_is_refused(body):
    with pytest.raises(SuccessBodyError):
        sanitize_success("chat", body, "gpt-4")


def test_embeddings_success_strips_unknown_fields_and_rewrites_model():
    body = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": [0.1, 2], "index": 0, "extra": 1}],
        "model": "upstream",
        "usage": {"prompt_tokens": 2, "total_tokens": 2, "cost": 1},
        "provider": "x",
    }
    out = orjson.loads(sanitize_success("embeddings", orjson.dumps(body), "embed"))
    assert out == {
        "object": "list",
        "data": [{"object": "embedding", "embedding": [0.1, 2], "index": 0}],
        "model": "embed",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }


def test_completions_back_fill_but_missing_text_is_refused():
    out = orjson.loads(sanitize_success("completions", b'{"choices": [{"text": "x", "junk": 1}]}', "m"))
    assert out["id"].startswith("cmpl-")
    assert out["object"] == "text_completion"
    assert out["choices"] == [{"text": "x", "index": 0}]
    with pytest.raises(SuccessBodyError):
        sanitize_success("completions", b'{"choices": [{"index": 0}]}', "m")


def test_responses_success_back_fills_and_strips():
    body = {"id": "resp_1", "output": [{"type": "message", "content": []}], "model": "up", "cost": 1}
    out = orjson.loads(sanitize_success("responses", orjson.dumps(body), "m"))
    assert out["id"] == "resp_1"
    assert out["object"] == "response"
    assert out["status"] == "completed"
    assert out["tool_choice"] == "auto"
    assert out["parallel_tool_calls"] is True
    assert out["model"] == "m"
    assert "cost" not in out and "usage" not in out
    assert out["output"] == [{"type": "message", "content": []}]


# --- streams -------------------------------------------------------------------------------------


def run(stream: StrictStream, *chunks: bytes) -> bytes:
    return b"".join(stream.feed(chunk) for chunk in chunks) + stream.flush()


def events(raw: bytes) -> list[dict | str]:
    out: list[dict | str] = []
    for line in raw.decode().split("\n"):
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4-turbo",
    "custom_field": 1,
    "choices": [{"index": 0, "delta": {"content": "hi", "junk": 2}, "native": 1}],
}


def test_streaming_chat_strips_unknown_fields_keeps_done_and_rewrites_model():
    raw = run(
        StrictStream("chat", "gpt-4", trusted=False),
        b"data: " + orjson.dumps(CHUNK) + b"\n\ndata: [DONE]\n\n",
    )
    assert events(raw) == [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4",
            "choices": [{"index": 0, "delta": {"content": "hi"}}],
        },
        "[DONE]",
    ]
    assert raw.endswith(b"data: [DONE]\n\n")


def test_streaming_back_fill_shares_one_fallback_id_and_positional_indexes():
    chunk = b'data: {"choices": [{"delta": {"content": "a"}}, {}]}\n\n'
    out = events(run(StrictStream("chat", "m", trusted=False), chunk, chunk))
    assert out[0]["id"] == out[1]["id"] and out[0]["id"].startswith("chatcmpl-")
    assert [c["index"] for c in out[0]["choices"]] == [0, 1]
    assert out[0]["choices"][1]["delta"] == {}
    assert out[0]["object"] == "chat.completion.chunk"


def test_sse_comment_lines_and_event_fields_are_stripped_and_split_events_reassembled():
    raw = run(
        StrictStream("chat", "m", trusted=False),
        b": provider=x cost=0.001\n\nevent: chunk\nid: 7\nda",
        b"ta: " + orjson.dumps(CHUNK) + b"\n",
        b"\n",
    )
    assert b"provider=x" not in raw and b"event:" not in raw and b"id: 7" not in raw
    assert events(raw)[0]["model"] == "m"


def test_multi_line_and_crlf_events_are_sanitized():
    raw = run(StrictStream("chat", "m", trusted=False), b"data: " + orjson.dumps(CHUNK) + b"\r\n\r\n")
    assert events(raw)[0]["choices"] == [{"index": 0, "delta": {"content": "hi"}}]


def test_streaming_embedded_error_untrusted_is_sanitized_and_trusted_forwarded():
    chunk = b'data: {"id":"g","choices":[],"error":{"code":402,"message":"out of credits"}}\n\n'
    untrusted = run(StrictStream("chat", "m", trusted=False), chunk)
    assert events(untrusted) == [
        {"error": {"message": "Bad gateway", "type": "api_error", "param": None, "code": 502}}
    ]
    trusted = run(StrictStream("chat", "m", trusted=True), chunk)
    assert events(trusted) == [{"error": {"code": 402, "message": "out of credits"}}]


def test_a_malformed_stream_event_ends_the_stream_with_one_error_event():
    stream = StrictStream("chat", "m", trusted=False)
    raw = run(stream, b"data: {broken\n\n", b"data: " + orjson.dumps(CHUNK) + b"\n\n")
    assert stream.failed
    assert events(raw) == [
        {"error": {"message": "Bad gateway", "type": "api_error", "param": None, "code": 502}}
    ]


def test_streaming_completions_back_fill_text_and_object():
    out = events(
        run(
            StrictStream("completions", "m", trusted=False),
            b'data: {"choices": [{"finish_reason": "stop"}]}\n\n',
        )
    )
    assert out[0]["object"] == "text_completion"
    assert out[0]["choices"] == [{"text": "", "index": 0, "finish_reason": "stop"}]
    assert out[0]["id"].startswith("cmpl-")


def test_streaming_responses_events_get_status_from_type_and_model_rewritten():
    created = {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "model": "up"}}
    delta = {"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi", "item_id": "i"}
    raw = run(
        StrictStream("responses", "m", trusted=False),
        b"event: response.created\ndata: " + orjson.dumps(created) + b"\n\n",
        b"data: " + orjson.dumps(delta) + b"\n\n",
    )
    first, second = events(raw)
    assert first["response"]["status"] == "in_progress"
    assert first["response"]["model"] == "m"
    assert second == delta
