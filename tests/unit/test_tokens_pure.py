"""The pure parts of token limits: the estimate, usage from JSON and SSE, the stream filter, headers."""

from __future__ import annotations

import json

import orjson
import pytest

from onwards.limits.base import Headroom
from onwards.tokens.estimate import decode_object, estimate, needs_usage_request, with_usage_requested
from onwards.tokens.headers import duration, ratelimit_headers, retry_headers, tighter
from onwards.tokens.usage import StreamUsage, Usage, usage_from_json

# -- estimate ---------------------------------------------------------------------------------


def test_estimate_is_body_bytes_over_four_plus_the_output_cap() -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50})
    assert estimate(body, decode_object(body, None), 4096) == -(-len(body) // 4) + 50


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens", "max_output_tokens"])
def test_each_output_cap_field_counts(field: str) -> None:
    request = {"model": "m", field: 7}
    assert estimate(b"x" * 8, request, 4096) == 2 + 7


def test_several_choices_reserve_the_cap_for_each() -> None:
    assert estimate(b"", {"max_tokens": 10, "n": 3}, 4096) == 30
    assert estimate(b"", {"max_tokens": 10, "n": "3"}, 4096) == 10  # not a number: not believed


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert estimate(b"", {"max_tokens": 100, "max_completion_tokens": 10}, 4096) == 10


def test_without_a_cap_the_target_default_is_reserved() -> None:
    assert estimate(b"x" * 4, {"model": "m"}, 300) == 1 + 300
    # Nonsense caps (a string, a negative number, a bool) are not believed.
    assert estimate(b"", {"max_tokens": "5"}, 300) == 300
    assert estimate(b"", {"max_tokens": -1}, 300) == 300
    assert estimate(b"", {"max_tokens": True}, 300) == 300


def test_a_body_that_is_not_a_json_object_reserves_nothing() -> None:
    assert decode_object(b"--boundary\r\n audio", None) is None
    assert decode_object(b"[1, 2]", None) is None
    assert decode_object(b"", None) is None
    assert estimate(b"--boundary", None, 4096) == 0
    decoded = {"model": "m"}
    assert decode_object(b"ignored", decoded) is decoded  # routing's decode is reused


def test_usage_is_requested_only_for_chat_and_completion_streams_that_did_not_ask() -> None:
    assert needs_usage_request("/v1/chat/completions", {"stream": True})
    assert needs_usage_request(
        "/v1/completions", {"stream": True, "stream_options": {"include_usage": False}}
    )
    assert not needs_usage_request(
        "/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}
    )
    assert not needs_usage_request("/v1/chat/completions", {"stream": False})
    assert not needs_usage_request("/v1/responses", {"stream": True})  # reports usage anyway
    assert not needs_usage_request("/v1/chat/completions", None)


def test_asking_for_usage_keeps_the_clients_stream_options() -> None:
    request = {"model": "m", "stream": True, "stream_options": {"other": 1}}
    asked = with_usage_requested(request)
    assert asked["stream_options"] == {"other": 1, "include_usage": True}
    assert request["stream_options"] == {"other": 1}  # not changed in place
    assert with_usage_requested({"stream": True})["stream_options"] == {"include_usage": True}


# -- usage from JSON --------------------------------------------------------------------------


def test_usage_from_chat_and_responses_and_embeddings_bodies() -> None:
    chat = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}
    assert usage_from_json(orjson.dumps(chat)) == Usage(12, 5)
    responses = {"object": "response", "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}}
    assert usage_from_json(orjson.dumps(responses)) == Usage(3, 4)
    embeddings = {"data": [], "usage": {"prompt_tokens": 9, "total_tokens": 9}}
    assert usage_from_json(orjson.dumps(embeddings)) == Usage(9, 0)
    assert Usage(3, 4).total == 7


def test_bodies_without_usable_usage() -> None:
    assert usage_from_json(b'{"choices": []}') is None
    assert usage_from_json(b'{"usage": null}') is None
    assert usage_from_json(b'{"usage": {"prompt_tokens": "many"}}') is None
    assert usage_from_json(b'not json "usage"') is None


# -- usage from streams -----------------------------------------------------------------------


def _event(data: object) -> bytes:
    return (
        b"data: "
        + (data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode())
        + b"\n\n"
    )


CHUNKS = [
    _event({"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
    _event({"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}}]}),
]
USAGE_CHUNK = _event({"id": "c1", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}})
DONE = _event(b"[DONE]")


def _cut(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
def test_observing_a_stream_reads_the_usage_and_forwards_every_byte(size: int) -> None:
    stream = b"".join([*CHUNKS, USAGE_CHUNK, DONE])
    reader = StreamUsage()
    out = b"".join(reader.feed(piece) for piece in _cut(stream, size)) + reader.flush()
    assert out == stream
    assert reader.usage == Usage(11, 2)


@pytest.mark.parametrize("size", [1, 3, 13, 64, 10_000])
def test_stripping_drops_the_injected_usage_chunk_wherever_the_stream_is_cut(size: int) -> None:
    # What the provider sends once asked for usage: "usage":null in every chunk, then the usage chunk.
    asked = [c.replace(b"]}\n\n", b'],"usage":null}\n\n') for c in CHUNKS]
    stream = b"".join([*asked, USAGE_CHUNK, DONE])
    reader = StreamUsage(strip=True)
    out = b"".join(reader.feed(piece) for piece in _cut(stream, size)) + reader.flush()
    assert out == b"".join([*CHUNKS, DONE])  # exactly what the client would have got unasked
    assert reader.usage == Usage(11, 2)


def test_crlf_events_and_a_final_event_without_blank_line() -> None:
    stream = b"".join(CHUNKS).replace(b"\n\n", b"\r\n\r\n") + USAGE_CHUNK.rstrip(b"\n")
    reader = StreamUsage(strip=True)
    out = reader.feed(stream) + reader.flush()
    assert out == b"".join(CHUNKS).replace(b"\n\n", b"\r\n\r\n")
    assert reader.usage == Usage(11, 2)


def test_a_responses_stream_reports_usage_in_its_completed_event() -> None:
    completed = {
        "type": "response.completed",
        "response": {"status": "completed", "usage": {"input_tokens": 5, "output_tokens": 8}},
    }
    stream = b"event: response.created\ndata: {}\n\nevent: response.completed\n" + _event(completed)
    reader = StreamUsage()
    assert b"".join(reader.feed(p) for p in _cut(stream, 5)) + reader.flush() == stream
    assert reader.usage == Usage(5, 8)


def test_a_stream_that_never_reports_usage_leaves_none() -> None:
    reader = StreamUsage(strip=True)
    stream = b"".join([*CHUNKS, DONE])
    assert reader.feed(stream) + reader.flush() == stream
    assert reader.usage is None


def test_a_usage_chunk_that_also_has_choices_is_kept() -> None:
    both = _event(
        {"choices": [{"index": 0, "delta": {}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    )
    reader = StreamUsage(strip=True)
    assert reader.feed(both) == both
    assert reader.usage == Usage(1, 1)


# -- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, b"0ms"), (0.0201, b"21ms"), (0.02, b"20ms"), (1, b"1s"), (1.5, b"1.5s"), (59.7311, b"59.732s"),
     (360, b"6m0s"), (90.25, b"1m30.25s"), (3600, b"1h0m0s")],
)  # fmt: skip
def test_durations_read_like_openais(seconds: float, text: bytes) -> None:
    assert duration(seconds) == text


def test_ratelimit_headers_for_both_kinds_and_for_none() -> None:
    headers = dict(ratelimit_headers(Headroom(60, 59, 1.0), Headroom(1000, 700, 18)))
    assert headers == {
        b"x-ratelimit-limit-requests": b"60",
        b"x-ratelimit-remaining-requests": b"59",
        b"x-ratelimit-reset-requests": b"1s",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"700",
        b"x-ratelimit-reset-tokens": b"18s",
    }
    assert ratelimit_headers(None, None) == []
    assert [n for n, _ in ratelimit_headers(None, Headroom(5, -3, 1))] == [
        b"x-ratelimit-limit-tokens",
        b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-tokens",
    ]
    assert dict(ratelimit_headers(None, Headroom(5, -3, 1)))[b"x-ratelimit-remaining-tokens"] == b"0"


def test_the_tighter_of_two_admissions() -> None:
    a, b = Headroom(10, 3, 1), Headroom(100, 50, 1)
    assert tighter(a, b) is a and tighter(b, a) is a
    assert tighter(None, b) is b and tighter(a, None) is a and tighter(None, None) is None


def test_retry_headers() -> None:
    assert dict(retry_headers(0.0014, False)) == {b"retry-after": b"1", b"retry-after-ms": b"2"}
    assert dict(retry_headers(2.5, False)) == {b"retry-after": b"3", b"retry-after-ms": b"2500"}
    assert retry_headers(None, True) == ((b"x-should-retry", b"false"),)
    assert retry_headers(None, False) == ()
