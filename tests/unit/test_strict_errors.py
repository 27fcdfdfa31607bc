"""Strict error standardization and embedded-error detection, after the Rust onwards' tests
(strict/handlers.rs error mapping and SSE error helper, handlers.rs embedded_error_status and
classify_sse_event)."""

from __future__ import annotations

import orjson
import pytest

from onwards.strict.errors import (
    classify_sse_event,
    embedded_error_status,
    mask_status,
    provider_status_code,
    sse_error_event,
    standard_error,
)


def body_of(raw: bytes) -> dict:
    return orjson.loads(raw)


def test_error_response_envelope_is_uniform_with_null_param_and_code():
    status, body = standard_error(400)
    assert status == 400
    assert body_of(body) == {
        "error": {"message": "Invalid request", "type": "invalid_request_error", "param": None, "code": None}
    }


@pytest.mark.parametrize(
    ("status", "type_", "message"),
    [
        (400, "invalid_request_error", "Invalid request"),
        (404, "not_found_error", "Not found"),
        (413, "invalid_request_error", "Request too large"),
        (422, "invalid_request_error", "Unprocessable request"),
        (429, "rate_limit_error", "Rate limit exceeded"),
        (500, "api_error", "Internal server error"),
        (502, "api_error", "Bad gateway"),
        (503, "api_error", "Service unavailable"),
        (504, "api_error", "Gateway timeout"),
        (418, "api_error", "An error occurred"),
    ],
)
def test_standard_error_mapping_by_status(status, type_, message):
    masked, body = standard_error(status)
    assert masked == status
    assert body_of(body)["error"] == {"message": message, "type": type_, "param": None, "code": None}


@pytest.mark.parametrize(("upstream", "client"), [(401, 502), (402, 502), (403, 502), (451, 502), (408, 504)])
def test_account_class_statuses_are_masked(upstream, client):
    masked, body = standard_error(upstream)
    assert masked == client
    assert body_of(body)["error"]["message"] == ("Bad gateway" if client == 502 else "Gateway timeout")


@pytest.mark.parametrize("status", [400, 404, 413, 422, 429, 500, 503])
def test_user_facing_statuses_pass_through_the_mask(status):
    assert mask_status(status) == status


def test_embedded_error_status_detects_provider_envelope():
    assert embedded_error_status({"error": {"code": 429, "message": "Provider returned error"}}) == 429
    chunk = {"id": "gen-x", "object": "chat.completion.chunk", "choices": [], "error": {"code": 503}}
    assert embedded_error_status(chunk) == 503
    assert embedded_error_status({"error": {"code": "502"}}) == 502


@pytest.mark.parametrize(
    "body",
    [
        {"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]},
        {"error": {"message": "x"}},
        {"error": {"code": None}},
        {"error": {"code": "rate_limit_exceeded"}},
        {"error": {"code": 200}},
        {"error": {"code": 999}},
        {"error": {"code": True}},
        {"error": "a string"},
        [1, 2],
    ],
)
def test_embedded_error_status_ignores_normal_and_ambiguous_bodies(body):
    assert embedded_error_status(body) is None


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (b'data: {"error":{"code":429,"message":"x"}}\n\n', ("error", 429)),
        (b'data: {"id":"g","choices":[],"error":{"code":502}}\n\n', ("error", 502)),
        (b'data:{"error":{"code":503}}\n\n', ("error", 503)),
        (b'data: {"error":\ndata: {"code":429}}\n\n', ("error", 429)),
        (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n', ("data", None)),
        (b"data: [DONE]\n\n", ("data", None)),
        (b"data: not json\n\n", ("data", None)),
        (b": keep-alive\n\n", ("comment", None)),
        (b": ping\n\n", ("comment", None)),
        (b"\xff\xfe", ("comment", None)),
    ],
)
def test_classify_sse_event_distinguishes_error_data_and_comment(event, kind):
    assert classify_sse_event(event) == kind


def test_sse_error_helper_trusted_forwards_the_error_object_verbatim_without_chunk_fields():
    chunk = {"id": "g", "choices": [], "error": {"code": 500, "message": "boom", "metadata": {"x": 1}}}
    assert sse_error_event(chunk, trusted=True) == (
        b'data: {"error":{"code":500,"message":"boom","metadata":{"x":1}}}'
    )


def test_sse_error_helper_untrusted_openrouter_shape_becomes_a_generic_numeric_error():
    chunk = {
        "id": "gen",
        "object": "chat.completion.chunk",
        "choices": [],
        "error": {"code": 429, "message": "Provider prose", "metadata": {"provider_name": "x"}},
    }
    event = sse_error_event(chunk, trusted=False)
    assert event is not None and event.startswith(b'data: {"error"')
    assert orjson.loads(event[6:]) == {
        "error": {"message": "Rate limit exceeded", "type": "rate_limit_error", "param": None, "code": 429}
    }


@pytest.mark.parametrize(
    ("code", "masked", "message"),
    [
        (402, 502, "Bad gateway"),
        (401, 502, "Bad gateway"),
        (451, 502, "Bad gateway"),
        (408, 504, "Gateway timeout"),
        ("429", 429, "Rate limit exceeded"),
        ("rate_limit", 429, "Rate limit exceeded"),
        ("rate_limit_exceeded", 429, "Rate limit exceeded"),
        ("rate_limit_error", 429, "Rate limit exceeded"),
        ("insufficient_quota", 500, "Internal server error"),
        (None, 500, "Internal server error"),
        (400, 400, "Invalid request"),
    ],
)
def test_sse_error_helper_masks_untrusted_codes(code, masked, message):
    error = {"message": "secret detail"} if code is None else {"code": code, "message": "secret detail"}
    event = sse_error_event({"error": error}, trusted=False)
    assert event is not None
    envelope = orjson.loads(event[6:])["error"]
    assert envelope["code"] == masked
    assert envelope["message"] == message
    assert b"secret" not in event


@pytest.mark.parametrize("chunk", [{"error": None}, {"error": {}}, {"error": "x"}, {"choices": []}, "x"])
def test_sse_error_helper_ignores_null_empty_and_string_errors(chunk):
    assert sse_error_event(chunk, trusted=False) is None
    assert sse_error_event(chunk, trusted=True) is None


def test_provider_status_code_reads_numbers_numeric_strings_and_rate_limit_names():
    assert provider_status_code(503) == 503
    assert provider_status_code("503") == 503
    assert provider_status_code("rate_limit") == 429
    assert provider_status_code("overloaded") is None
    assert provider_status_code(True) is None
