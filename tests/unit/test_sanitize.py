"""Response sanitization: non-streaming rewrite, SSE re-framing and rewrite, sanitized error bodies."""

from __future__ import annotations

import random
import time

import orjson
import pytest

from onwards.proxy.sanitize import (
    MAX_EVENT_BYTES,
    SanitizeError,
    SseSanitizer,
    sanitize_chat_completion,
    sanitized_error_body,
)

TOP_LEVEL = ["id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"]


def completion(**overrides):
    body = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1677652288,
        "model": "gpt-4-turbo-2024-04-09",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    body.update(overrides)
    return body


def sanitize(body, model="gpt-4"):
    return orjson.loads(sanitize_chat_completion(orjson.dumps(body), model))


# --- non-streaming ---------------------------------------------------------------------------------------


def test_unknown_fields_are_removed_and_model_rewritten():
    body = completion(provider="OpenRouter", cost=0.0012, system_fingerprint="fp_1", service_tier="default")
    body["choices"][0]["native_finish_reason"] = "STOP"
    body["usage"].update(cost=0.0012, is_byok=False, cost_details={"upstream": 1})

    out = sanitize(body)

    assert list(out) == TOP_LEVEL
    assert out["model"] == "gpt-4"
    assert out["id"] == "chatcmpl-123"
    assert out["created"] == 1677652288
    assert out["system_fingerprint"] == "fp_1"
    assert out["service_tier"] == "default"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def test_output_field_order_matches_openai():
    raw = sanitize_chat_completion(orjson.dumps(completion()), "gpt-4")
    assert raw.startswith(
        b'{"id":"chatcmpl-123","object":"chat.completion","created":1677652288,"model":"gpt-4","choices":'
    )


def test_message_is_kept_verbatim_including_non_standard_fields():
    message = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "thinking...",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "vendor_extra": {"nested": [1, 2]},
    }
    body = completion(choices=[{"index": 0, "message": message, "finish_reason": "tool_calls"}])
    assert sanitize(body)["choices"][0]["message"] == message


def test_defaults_are_filled_in():
    before = int(time.time())
    out = sanitize({"model": "upstream", "choices": [{"message": {"role": "assistant", "content": "x"}}]})
    after = int(time.time())

    assert list(out) == TOP_LEVEL
    assert out["id"] == "chatcmpl-unknown"
    assert out["object"] == "chat.completion"
    assert before <= out["created"] <= after
    assert out["usage"] is None
    assert out["system_fingerprint"] is None
    assert out["service_tier"] is None
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "x"},
            "finish_reason": None,
            "logprobs": None,
        }
    ]


def test_null_fields_get_defaults_instead_of_failing():
    body = completion(id=None, object=None, created=None, usage=None)
    body["choices"][0]["index"] = None
    out = sanitize(body)
    assert out["id"] == "chatcmpl-unknown"
    assert out["object"] == "chat.completion"
    assert isinstance(out["created"], int)
    assert out["usage"] is None
    assert out["choices"][0]["index"] == 0


def test_stop_reason_is_kept_when_present_and_never_invented():
    body = completion()
    body["choices"].append({"index": 1, "message": {"role": "assistant"}, "stop_reason": "</answer>"})
    body["choices"].append({"index": 2, "message": {"role": "assistant"}, "stop_reason": 128009})
    out = sanitize(body)
    assert "stop_reason" not in out["choices"][0]
    assert out["choices"][1]["stop_reason"] == "</answer>"
    assert out["choices"][2]["stop_reason"] == 128009
    assert list(out["choices"][1]) == ["index", "message", "finish_reason", "logprobs", "stop_reason"]


def test_logprobs_pass_through():
    logprobs = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]}
    body = completion()
    body["choices"][0]["logprobs"] = logprobs
    assert sanitize(body)["choices"][0]["logprobs"] == logprobs


def test_usage_details_are_normalised():
    body = completion(
        usage={
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 80, "video_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 20, "image_tokens": 2},
            "cost": 0.5,
        }
    )
    assert sanitize(body)["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 80, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 20,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def test_empty_usage_object_becomes_zero_counts():
    out = sanitize(completion(usage={}))
    assert out["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def test_empty_choices_are_allowed():
    assert sanitize(completion(choices=[]))["choices"] == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json at all",
        b"<html>502 Bad Gateway</html>",
        b'{"model": "m", "choices": [',
        b"[1, 2, 3]",
        b'"a string"',
        b"null",
    ],
)
def test_garbage_raises_sanitize_error(body):
    with pytest.raises(SanitizeError):
        sanitize_chat_completion(body, "gpt-4")


def _without(key):
    body = completion()
    del body[key]
    return body


def _choice_without_message():
    body = completion()
    del body["choices"][0]["message"]
    return body


def _with_usage(**usage):
    return completion(usage=usage)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (_without("model"), "model"),
        (_without("choices"), "choices"),
        (completion(choices={"0": {}}), "choices"),
        (completion(choices=["text"]), "choices[0]"),
        (_choice_without_message(), "choices[0].message"),
        (completion(model=42), "model must be a string"),
        (completion(model=None), "model must be a string"),
        (completion(choices=None), "choices must be an array"),
        (completion(id=7), "id"),
        (completion(created="yesterday"), "created"),
        (completion(created=-1), "created"),
        (completion(created=True), "created"),
        (completion(usage="lots"), "usage"),
        (_with_usage(prompt_tokens="9"), "usage.prompt_tokens"),
        (_with_usage(prompt_tokens=-1), "usage.prompt_tokens"),
        (_with_usage(total_tokens=1.5), "usage.total_tokens"),
        (_with_usage(completion_tokens=True), "usage.completion_tokens"),
        (_with_usage(prompt_tokens_details=[1]), "usage.prompt_tokens_details"),
        (_with_usage(completion_tokens_details={"reasoning_tokens": "x"}), "reasoning_tokens"),
        (completion(system_fingerprint=1), "system_fingerprint"),
        (completion(service_tier=["auto"]), "service_tier"),
    ],
)
def test_malformed_completion_raises_and_names_the_field(body, needle):
    with pytest.raises(SanitizeError) as info:
        sanitize_chat_completion(orjson.dumps(body), "gpt-4")
    assert needle in str(info.value)


def test_bad_choice_fields_raise():
    for field, value in [("finish_reason", 1), ("index", -2), ("index", "0"), ("index", True)]:
        body = completion()
        body["choices"][0][field] = value
        with pytest.raises(SanitizeError, match=field):
            sanitize_chat_completion(orjson.dumps(body), "gpt-4")


def test_error_messages_do_not_quote_the_body():
    secret = "patient-record-4711"
    cases = [
        secret.encode(),
        orjson.dumps({"note": secret, "choices": []}),
        orjson.dumps(completion(usage={"prompt_tokens": secret})),
    ]
    for body in cases:
        with pytest.raises(SanitizeError) as info:
            sanitize_chat_completion(body, "gpt-4")
        assert secret not in str(info.value)
        # The decoder's exception (which holds the body) must not be chained into tracebacks.
        assert info.value.__cause__ is None
        assert info.value.__context__ is None or info.value.__suppress_context__


def test_client_model_must_be_a_string():
    with pytest.raises(TypeError):
        sanitize_chat_completion(orjson.dumps(completion()), None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SseSanitizer(b"gpt-4")  # type: ignore[arg-type]


# --- streaming -------------------------------------------------------------------------------------------


def chunk(content="Hi", **overrides):
    body = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4-turbo-2024-04-09",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    body.update(overrides)
    return body


def event(body) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def run_whole(stream: bytes, model="gpt-4") -> bytes:
    sanitizer = SseSanitizer(model)
    return sanitizer.feed(stream) + sanitizer.flush()


def run_bytewise(stream: bytes, model="gpt-4") -> bytes:
    sanitizer = SseSanitizer(model)
    out = [sanitizer.feed(stream[i : i + 1]) for i in range(len(stream))]
    return b"".join(out) + sanitizer.flush()


def run_random(stream: bytes, seed: int, model="gpt-4") -> bytes:
    rng = random.Random(seed)
    sanitizer = SseSanitizer(model)
    out, pos = [], 0
    while pos < len(stream):
        step = rng.randint(1, 40)
        out.append(sanitizer.feed(stream[pos : pos + step]))
        pos += step
    return b"".join(out) + sanitizer.flush()


def assert_chunking_independent(stream: bytes) -> bytes:
    whole = run_whole(stream)
    assert run_bytewise(stream) == whole
    for seed in range(5):
        assert run_random(stream, seed) == whole
    return whole


def data_lines(output: bytes) -> list[bytes]:
    return [line[6:] for line in output.split(b"\n") if line.startswith(b"data: ")]


def test_stream_chunk_is_rewritten_exactly():
    body = chunk(provider="Together", custom_field={"x": 1})
    body["choices"][0]["native_finish_reason"] = None
    out = run_whole(event(body) + b"data: [DONE]\n\n")
    expected = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None, "logprobs": None}],
        "usage": None,
        "system_fingerprint": None,
        "service_tier": None,
    }
    assert out == b"data: " + orjson.dumps(expected) + b"\n\ndata: [DONE]\n\n"


def test_stream_chunk_defaults_and_usage_normalised():
    before = int(time.time())
    body = {
        "model": "upstream",
        "choices": [{"delta": {"role": "assistant"}}, {"index": 1}],
        "usage": {"prompt_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 2}, "cost": 1},
    }
    (line,) = data_lines(run_whole(event(body)))
    out = orjson.loads(line)
    assert out["id"] == "chatcmpl-unknown"
    assert out["object"] == "chat.completion.chunk"
    assert before <= out["created"] <= int(time.time())
    assert out["model"] == "gpt-4"
    assert out["choices"] == [
        {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None, "logprobs": None},
        {"index": 1, "delta": {}, "finish_reason": None, "logprobs": None},
    ]
    assert out["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 0,
        "total_tokens": 0,
        "prompt_tokens_details": None,
        "completion_tokens_details": {
            "reasoning_tokens": 2,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def test_done_is_kept_and_model_rewritten_in_every_chunk():
    stream = b"".join(event(chunk(c)) for c in ("He", "ll", "o")) + b"data: [DONE]\n\n"
    out = assert_chunking_independent(stream)
    lines = data_lines(out)
    assert lines[-1] == b"[DONE]"
    assert [orjson.loads(x)["model"] for x in lines[:-1]] == ["gpt-4"] * 3
    assert [orjson.loads(x)["choices"][0]["delta"]["content"] for x in lines[:-1]] == ["He", "ll", "o"]
    assert b"gpt-4-turbo" not in out
    assert out.endswith(b"data: [DONE]\n\n")
    assert out.count(b"\n\n") == 4


def test_split_at_arbitrary_boundaries_gives_the_same_output():
    stream = (
        b": OPENROUTER PROCESSING\n\n"
        + event(chunk("a"))
        + b"event: message\nid: 7\n"
        + event(chunk("b", provider="x"))[:-2]
        + b"\n\n"
        + b'data: {"model": "m", "choices": [\n\n'
        + event({"error": {"message": "overloaded", "code": 529}})
        + event(chunk("c"))
        + b"data: [DONE]\n\n"
    )
    out = assert_chunking_independent(stream)
    assert out.count(b'"model":"gpt-4"') == 3


def test_done_with_padding_is_kept_and_its_comments_dropped():
    assert run_whole(b": bye\ndata:  [DONE] \n\n") == b"data:  [DONE] \n\n"


def test_stray_blank_lines_between_events_are_kept():
    first, second = run_whole(event(chunk("a"))), run_whole(event(chunk("b")))
    assert (
        assert_chunking_independent(event(chunk("a")) + b"\n" + event(chunk("b"))) == first + b"\n" + second
    )


def test_comments_and_other_fields_are_dropped():
    stream = b": keep-alive\nevent: delta\nid: 42\nretry: 1000\n" + event(chunk())
    out = assert_chunking_independent(stream)
    assert out.startswith(b"data: {")
    assert out.endswith(b"\n\n")
    for dropped in (b"keep-alive", b"event:", b"id:", b"retry:"):
        assert dropped not in out


def test_comment_only_event_leaves_a_blank_line():
    # Keep-alive events still produce traffic, which SSE parsers ignore.
    assert assert_chunking_independent(b": ping\n\n" + event(chunk())).startswith(b"\n\ndata: {")


def test_embedded_error_is_forwarded_verbatim():
    error = {"message": "Rate limit exceeded upstream", "code": 429, "metadata": {"provider": "X"}}
    stream = event(chunk()) + event({"error": error})
    out = assert_chunking_independent(stream)
    assert data_lines(out)[1] == orjson.dumps({"error": error})


def test_error_inside_a_normal_chunk_drops_the_wrapper():
    body = chunk("")
    body["choices"][0]["finish_reason"] = "error"
    body["error"] = {"code": "502", "message": "Provider returned error"}
    out = run_whole(event(body))
    assert out == b'data: {"error":{"code":"502","message":"Provider returned error"}}\n\n'


def test_error_with_only_a_code_counts_as_error():
    out = run_whole(b'data: {"error": {"code": "server_error"}}\n\n')
    assert out == b'data: {"error":{"code":"server_error"}}\n\n'


@pytest.mark.parametrize("error", [None, {}, {"type": "none"}, "oops"])
def test_empty_or_non_object_error_is_not_an_error(error):
    out = run_whole(event(chunk(error=error)))
    (line,) = data_lines(out)
    parsed = orjson.loads(line)
    assert parsed["model"] == "gpt-4"
    assert "error" not in parsed


@pytest.mark.parametrize(
    "raw_event",
    [
        b'data: {"model": "m", "choices": [\n\n',
        b"data: not-json\n\n",
        b"data: \n\n",
        b'data: {"choices": []}\n\n',
        b'data: {"model": "m"}\n\n',
        b'data: {"model": "m", "choices": [{"index": "zero"}]}\n\n',
        b"data: [1, 2]\n\n",
        b'data: {"model": "m", "choices": [], "x": "\xff\xfe"}\n\n',
        b': note\ndata: {"model": "m", "choices": [], "custom": 1}\ndata: {broken\n\n',
    ],
)
def test_unparseable_event_passes_through_unchanged(raw_event):
    stream = event(chunk("before")) + raw_event + event(chunk("after"))
    out = assert_chunking_independent(stream)
    assert raw_event in out
    # Neighbouring events are still sanitized.
    assert out.count(b'"model":"gpt-4"') == 2


def test_multi_line_data_event_rewrites_each_line():
    stream = b"data: " + orjson.dumps(chunk("a")) + b"\ndata: " + orjson.dumps(chunk("b")) + b"\n\n"
    out = assert_chunking_independent(stream)
    lines = data_lines(out)
    assert len(lines) == 2
    assert all(orjson.loads(x)["model"] == "gpt-4" for x in lines)
    assert out.count(b"\n\n") == 1


def test_data_without_space_is_read_and_normalised():
    out = run_whole(b"data:" + orjson.dumps(chunk()) + b"\n\ndata:[DONE]\n\n")
    lines = data_lines(out)
    assert orjson.loads(lines[0])["model"] == "gpt-4"
    assert out.endswith(b"data:[DONE]\n\n")


def test_crlf_framing_is_split_before_eof():
    stream = (
        b": hi\r\n\r\n"
        + b"data: "
        + orjson.dumps(chunk("a"))
        + b"\r\n\r\n"
        + b"data: "
        + orjson.dumps(chunk("b"))
        + b"\r\n\r\n"
        + b"data: [DONE]\r\n: bye\r\n\r\n"
    )
    sanitizer = SseSanitizer("gpt-4")
    out = sanitizer.feed(stream)
    # Everything is out before EOF: nothing is held back for flush().
    assert sanitizer.flush() == b""
    lines = data_lines(out)
    assert [orjson.loads(x)["choices"][0]["delta"]["content"] for x in lines[:2]] == ["a", "b"]
    assert lines[2] == b"[DONE]"
    assert b"\r" not in out
    assert assert_chunking_independent(stream) == out


def test_mixed_line_endings_are_framed():
    first, second = orjson.dumps(chunk("a")), orjson.dumps(chunk("b"))
    stream = b"data: " + first + b"\r\n\n" + b"data: " + second + b"\n\r\n"
    sanitizer = SseSanitizer("gpt-4")
    out = sanitizer.feed(stream)
    assert sanitizer.flush() == b""
    assert len(data_lines(out)) == 2
    assert out.count(b"\n\n") == 2


def test_feed_returns_only_complete_events():
    raw = event(chunk())
    sanitizer = SseSanitizer("gpt-4")
    assert sanitizer.feed(raw[:-1]) == b""
    out = sanitizer.feed(raw[-1:])
    assert out.endswith(b"\n\n")
    assert orjson.loads(data_lines(out)[0])["model"] == "gpt-4"
    assert sanitizer.flush() == b""


def test_extra_blank_lines_are_emitted_without_waiting_for_eof():
    sanitizer = SseSanitizer("gpt-4")
    out = sanitizer.feed(event(chunk("a")) + b"\n\n\n\n" + event(chunk("b")) + b"\r\n\r\n")
    assert sanitizer.flush() == b""
    assert len(data_lines(out)) == 2
    assert out.endswith(b"\n\n\n\n")


def test_trailing_partial_event_is_flushed_sanitized():
    stream = event(chunk("a")) + b"data: " + orjson.dumps(chunk("tail", provider="p"))
    sanitizer = SseSanitizer("gpt-4")
    first = sanitizer.feed(stream)
    assert len(data_lines(first)) == 1
    tail = sanitizer.flush()
    assert tail.startswith(b"data: {")
    assert not tail.endswith(b"\n")
    parsed = orjson.loads(tail[6:])
    assert parsed["model"] == "gpt-4"
    assert "provider" not in parsed
    assert sanitizer.flush() == b""
    assert assert_chunking_independent(stream) == first + tail


def test_multi_line_partial_event_is_flushed_without_adding_newlines():
    out = run_whole(b"event: x\ndata: " + orjson.dumps(chunk()))
    assert out.startswith(b"data: {")
    assert out.endswith(b"}")


def test_chunk_completing_a_buffered_event_is_joined_to_it():
    raw = event(chunk("joined"))
    sanitizer = SseSanitizer("gpt-4")
    assert sanitizer.feed(raw[:6]) == b""
    out = sanitizer.feed(raw[6:])
    assert orjson.loads(data_lines(out)[0])["choices"][0]["delta"]["content"] == "joined"
    assert sanitizer.flush() == b""


def test_trailing_newline_of_a_partial_event_is_kept():
    out = run_whole(b"data: " + orjson.dumps(chunk()) + b"\n")
    assert out.endswith(b"}\n")
    assert not out.endswith(b"\n\n")


def test_empty_stream_and_empty_chunks():
    sanitizer = SseSanitizer("gpt-4")
    assert sanitizer.feed(b"") == b""
    assert sanitizer.flush() == b""


def _padded_event(size: int) -> bytes:
    """A valid chunk event of exactly size bytes, blank line included."""
    base = event(chunk(""))
    body = chunk("x" * (size - len(base)))
    raw = event(body)
    assert len(raw) == size
    return raw


def test_event_of_exactly_the_cap_is_sanitized():
    raw = _padded_event(MAX_EVENT_BYTES)
    out = assert_chunking_independent(raw + b"data: [DONE]\n\n")
    assert out.count(b'"model":"gpt-4"') == 1
    assert b"gpt-4-turbo" not in out


@pytest.mark.parametrize(("size", "rewritten"), [(MAX_EVENT_BYTES, True), (MAX_EVENT_BYTES + 1, False)])
def test_single_event_chunk_obeys_the_cap(size, rewritten):
    raw = _padded_event(size)
    sanitizer = SseSanitizer("gpt-4")
    out = sanitizer.feed(raw) + sanitizer.flush()
    assert (out == raw) is not rewritten
    assert (b'"model":"gpt-4"' in out) is rewritten


def test_event_over_the_cap_passes_through_and_the_stream_goes_on():
    big = _padded_event(MAX_EVENT_BYTES + 1)
    stream = event(chunk("before")) + big + event(chunk("after")) + b"data: [DONE]\n\n"
    out = assert_chunking_independent(stream)
    assert big in out  # forwarded unchanged, not dropped and not ending the stream
    assert out.count(b'"model":"gpt-4"') == 2
    assert out.endswith(b"data: [DONE]\n\n")


def test_oversized_event_with_crlf_end_split_across_chunks():
    big = b"data: " + b"y" * (2 * MAX_EVENT_BYTES) + b"\r\n\r\n"
    after = b"data: " + orjson.dumps(chunk("after")) + b"\r\n\r\n"
    sanitizer = SseSanitizer("gpt-4")
    out = [sanitizer.feed(big[: MAX_EVENT_BYTES + 10])]
    assert out[0] == big[: MAX_EVENT_BYTES + 10]  # forwarded as soon as it is known to be oversized
    # The blank line is cut between "\r\n\r" and "\n".
    out.append(sanitizer.feed(big[MAX_EVENT_BYTES + 10 : -1]))
    out.append(sanitizer.feed(big[-1:] + after))
    out.append(sanitizer.flush())
    joined = b"".join(out)
    assert joined.startswith(big)
    assert orjson.loads(data_lines(joined[len(big) :])[0])["model"] == "gpt-4"


def test_chunk_ending_an_oversized_event_is_forwarded_unchanged():
    big = b"data: " + b"v" * (MAX_EVENT_BYTES + 20) + b"\n\n"
    sanitizer = SseSanitizer("gpt-4")
    out = sanitizer.feed(big[:-10]) + sanitizer.feed(big[-10:]) + sanitizer.flush()
    assert out == big


def test_unterminated_oversized_data_is_forwarded_not_lost():
    stream = event(chunk("a")) + b"data: " + b"z" * (3 * MAX_EVENT_BYTES)
    sanitizer = SseSanitizer("gpt-4")
    head = sanitizer.feed(stream[:100])
    rest = sanitizer.feed(stream[100:])
    out = head + rest + sanitizer.flush()
    assert out.endswith(b"data: " + b"z" * (3 * MAX_EVENT_BYTES))
    assert assert_chunking_independent(stream) == out


def test_bytes_are_forwarded_once_the_pending_event_reaches_the_cap():
    sanitizer = SseSanitizer("gpt-4")
    assert sanitizer.feed(b"data: " + b"w" * (MAX_EVENT_BYTES - 7)) == b""
    assert sanitizer.feed(b"w") == b"data: " + b"w" * (MAX_EVENT_BYTES - 6)
    assert sanitizer.feed(b"w\n\n" + event(chunk())).startswith(b"w\n\ndata: {")


def test_buffer_stays_bounded():
    sanitizer = SseSanitizer("gpt-4")
    for _ in range(20):
        sanitizer.feed(b"q" * 10_000)
        assert len(sanitizer._buf) < MAX_EVENT_BYTES


def test_many_events_in_one_chunk():
    events = [event(chunk(str(i))) for i in range(500)]
    out = assert_chunking_independent(b"".join(events))
    contents = [orjson.loads(x)["choices"][0]["delta"]["content"] for x in data_lines(out)]
    assert contents == [str(i) for i in range(500)]


# --- error bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 402, 404, 422, 429, 499])
def test_4xx_error_body(status):
    assert sanitized_error_body(status) == (
        b'{"error":{"message":"The upstream provider rejected the request.",'
        b'"type":"invalid_request_error","param":null,"code":"upstream_error"}}'
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 302, 101])
def test_other_error_body(status):
    assert sanitized_error_body(status) == (
        b'{"error":{"message":"An internal error occurred. Please try again later.",'
        b'"type":"internal_error","param":null,"code":"internal_error"}}'
    )


@pytest.mark.parametrize("status", [200, 204, 299, 99, 600, -1, "500", 500.0, True])
def test_error_body_refuses_non_error_statuses(status):
    with pytest.raises(ValueError):
        sanitized_error_body(status)


# --- the output is what the OpenAI SDK expects -----------------------------------------------------------


def test_outputs_validate_against_the_openai_sdk_types():
    chat_types = pytest.importorskip("openai.types.chat")
    body = completion(provider="p", usage={"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1}})
    body["choices"][0]["stop_reason"] = None
    full = chat_types.ChatCompletion.model_validate(sanitize(body))
    assert full.model == "gpt-4"
    assert full.usage.prompt_tokens_details.cached_tokens == 1

    stream = event({"model": "m", "choices": [{"index": 0}], "usage": {"completion_tokens": 2}})
    stream += event(chunk("x", system_fingerprint="fp"))
    for line in data_lines(run_whole(stream)):
        parsed = chat_types.ChatCompletionChunk.model_validate(orjson.loads(line))
        assert parsed.model == "gpt-4"
