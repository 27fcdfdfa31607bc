"""The mock upstream behaves as the other tests rely on: bodies, SSE framing, steering, recording."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.mock_upstream import MockUpstream
from tests.support.processes import wait_until

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # One client for the module: building an httpx client (TLS context included) costs ~0.1 s each time.
    with httpx.Client(timeout=10) as client:
        yield client


def chat(model: str = "gpt-test", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "say hi please"}], **extra}


def read_events(response: httpx.Response) -> list[tuple[float, str]]:
    """Each SSE event's data with the moment its last byte arrived."""
    events: list[tuple[float, str]] = []
    buffer = b""
    for piece in response.iter_raw():
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            events.append((time.monotonic(), event.decode()))
    assert buffer == b"", f"stream ended inside an event: {buffer!r}"
    return events


def data_of(event: str) -> str:
    lines = [line for line in event.split("\n") if line.startswith("data: ")]
    assert len(lines) == 1, event
    return lines[0][len("data: ") :]


def test_chat_completion_json(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    response = http.post(mock_upstream.url + CHAT, json=chat("my-model"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-mock-name"] == "mock"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "my-model"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "hello from mock"}, "finish_reason": "stop"}
    ]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert body["provider_extra"] == "x"


def test_any_path_prefix_routes_by_suffix(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    response = http.post(mock_upstream.url + "/openai/deployments/x/chat/completions/", json=chat())
    assert response.json()["object"] == "chat.completion"


def test_name_shows_in_content_and_header(http: httpx.Client, mock_upstream_factory) -> None:
    a, b = mock_upstream_factory("a"), mock_upstream_factory("b")
    for mock in (a, b):
        response = http.post(mock.url + CHAT, json=chat())
        assert response.headers["x-mock-name"] == mock.name
        assert response.json()["choices"][0]["message"]["content"] == f"hello from {mock.name}"
    assert len(a.requests) == len(b.requests) == 1


def test_stream_events_arrive_one_by_one(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    headers = {"x-mock-chunks": "4", "x-mock-chunk-delay": "0.1"}
    started = time.monotonic()
    with http.stream(
        "POST", mock_upstream.url + CHAT, json=chat("m", stream=True), headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-mock-name"] == "mock"
        events = read_events(response)

    assert len(events) == 5  # 4 chunks and [DONE]
    assert data_of(events[-1][1]) == "[DONE]"
    chunks = [json.loads(data_of(event)) for _, event in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    assert all(c["provider_extra"] == "x" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "hello from mock"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]

    # Events were flushed separately: each arrived about one chunk delay after the one before.
    times = [t for t, _ in events]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.07 for gap in gaps), gaps
    assert times[0] - started < 0.35, "the first event must not wait for the rest"


def test_stream_defaults_and_usage_chunk(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    with http.stream("POST", mock_upstream.url + CHAT, json=body) as response:
        events = [data_of(event) for _, event in read_events(response)]
    assert len(events) == 3 + 1 + 1  # default 3 chunks, the usage chunk, [DONE]
    usage_chunk = json.loads(events[3])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] > 0
    assert events[-1] == "[DONE]"


def test_stream_chunk_count_from_instance_default(http: httpx.Client, mock_upstream_factory) -> None:
    mock = mock_upstream_factory("many", chunks=7)
    with http.stream("POST", mock.url + CHAT, json=chat(stream=True)) as response:
        events = read_events(response)
    assert len(events) == 8


def test_completions_embeddings_responses(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    completion = http.post(mock_upstream.url + "/v1/completions", json={"model": "c", "prompt": "hi"}).json()
    assert completion["object"] == "text_completion"
    assert completion["model"] == "c"
    assert completion["choices"][0]["text"] == "hello from mock"

    embeddings = http.post(mock_upstream.url + "/v1/embeddings", json={"model": "e", "input": ["a", "b"]})
    body = embeddings.json()
    assert body["object"] == "list"
    assert body["model"] == "e"
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert all(item["object"] == "embedding" and item["embedding"] for item in body["data"])
    single = http.post(mock_upstream.url + "/v1/embeddings", json={"model": "e", "input": "a"}).json()
    assert len(single["data"]) == 1

    response = http.post(mock_upstream.url + "/v1/responses", json={"model": "r", "input": "hi"}).json()
    assert response["object"] == "response"
    assert response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "hello from mock"


def test_completions_and_responses_stream(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    with http.stream(
        "POST", mock_upstream.url + "/v1/completions", json={"model": "c", "prompt": "x", "stream": True}
    ) as response:
        events = [data_of(event) for _, event in read_events(response)]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == "hello from mock"

    with http.stream(
        "POST", mock_upstream.url + "/v1/responses", json={"model": "r", "input": "x", "stream": True}
    ) as response:
        events = [event for _, event in read_events(response)]
    kinds = [event.split("\n")[0] for event in events]
    assert kinds == ["event: response.created"] + ["event: response.output_text.delta"] * 3 + [
        "event: response.completed"
    ]
    deltas = [json.loads(data_of(e))["delta"] for e in events[1:-1]]
    assert "".join(deltas) == "hello from mock"


def test_other_paths_echo(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    response = http.put(
        mock_upstream.url + "/v1/files/abc?purpose=x", content=b"raw bytes", headers={"X-Thing": "1"}
    )
    assert response.status_code == 200
    echo = response.json()
    assert echo["mock"] == "mock"
    assert echo["method"] == "PUT"
    assert echo["path"] == "/v1/files/abc?purpose=x"
    assert echo["headers"]["x-thing"] == "1"
    assert echo["body"] == "raw bytes"
    assert echo["json"] is None

    models = http.get(mock_upstream.url + "/v1/models").json()
    assert models["object"] == "list"
    assert models["method"] == "GET"
    assert models["path"] == "/v1/models"


def test_records_requests(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    raw = b'{"model": "m",   "messages": []}'
    http.post(
        mock_upstream.url + CHAT + "?api-version=1",
        content=raw,
        headers=[("Authorization", "Bearer k"), ("X-Multi", "a"), ("X-Multi", "b")],
    )
    http.get(mock_upstream.url + "/v1/models")
    first, second = mock_upstream.requests
    assert first.method == "POST"
    assert first.path == CHAT + "?api-version=1"
    assert first.body == raw  # untouched bytes, spacing included
    assert first.json() == {"model": "m", "messages": []}
    assert first.headers["authorization"] == "Bearer k"
    assert first.headers["x-multi"] == "a, b"
    assert all(name == name.lower() for name in first.headers)
    assert first.status == 200
    assert first.disconnected is False
    assert second.method == "GET"
    assert second.received_at >= first.received_at
    assert mock_upstream.request_count == 2

    mock_upstream.clear()
    assert mock_upstream.requests == []
    assert mock_upstream.request_count == 0
    assert mock_upstream.max_in_flight == 0


def test_record_off_still_counts(http: httpx.Client, mock_upstream_factory) -> None:
    mock = mock_upstream_factory("quiet", record=False)
    http.post(mock.url + CHAT, json=chat())
    assert mock.requests == []
    assert mock.request_count == 1


@pytest.mark.parametrize(("status", "kind"), [(503, "server_error"), (429, "rate_limit_error"), (400, None)])
def test_status_header(
    http: httpx.Client, mock_upstream: MockUpstream, status: int, kind: str | None
) -> None:
    response = http.post(mock_upstream.url + CHAT, json=chat(), headers={"x-mock-status": str(status)})
    assert response.status_code == status
    assert response.headers["x-mock-name"] == "mock"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == (kind or "invalid_request_error")
    assert mock_upstream.requests[-1].status == status


def test_status_header_applies_to_streams_too(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    response = http.post(mock_upstream.url + CHAT, json=chat(stream=True), headers={"x-mock-status": "500"})
    assert response.status_code == 500
    assert "error" in response.json()


def test_delay_header(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    started = time.monotonic()
    http.post(mock_upstream.url + CHAT, json=chat(), headers={"x-mock-delay": "0.4"})
    assert time.monotonic() - started >= 0.4

    started = time.monotonic()
    http.post(mock_upstream.url + CHAT, json=chat())
    assert time.monotonic() - started < 0.3


def test_instance_defaults_can_change_while_running(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    mock_upstream.status = 502
    assert http.post(mock_upstream.url + CHAT, json=chat()).status_code == 502
    mock_upstream.status = 200
    mock_upstream.delay = 0.3
    started = time.monotonic()
    assert http.post(mock_upstream.url + CHAT, json=chat()).status_code == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    ("setting", "value"),
    [("status", 99), ("status", "200"), ("delay", -1), ("delay", float("nan")), ("chunks", -1)],
)
def test_settings_are_validated(setting: str, value: object) -> None:
    mock = MockUpstream("v")
    with pytest.raises(ValueError, match=setting):
        setattr(mock, setting, value)


def test_fail_next(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    mock_upstream.fail_next(2, 502)
    mock_upstream.fail_next(1, 429)
    codes = [http.post(mock_upstream.url + CHAT, json=chat()).status_code for _ in range(4)]
    assert codes == [502, 502, 429, 200]


def test_header_beats_fail_next_without_using_it_up(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    mock_upstream.fail_next(1, 503)
    explicit = http.post(mock_upstream.url + CHAT, json=chat(), headers={"x-mock-status": "200"})
    assert explicit.status_code == 200
    assert http.post(mock_upstream.url + CHAT, json=chat()).status_code == 503
    assert http.post(mock_upstream.url + CHAT, json=chat()).status_code == 200


def test_fail_next_rejects_success_status(mock_upstream: MockUpstream) -> None:
    with pytest.raises(ValueError, match="error status"):
        mock_upstream.fail_next(1, 200)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-mock-status", "abc"),
        ("x-mock-status", "700"),
        ("x-mock-delay", "-1"),
        ("x-mock-delay", "soon"),
        ("x-mock-chunks", "2.5"),
        ("x-mock-chunk-delay", "inf"),
        ("x-mock-hang", "maybe"),
    ],
)
def test_bad_control_header_is_a_clear_400(
    http: httpx.Client, mock_upstream: MockUpstream, header: str, value: str
) -> None:
    mock_upstream.fail_next(1, 503)
    response = http.post(mock_upstream.url + CHAT, json=chat(), headers={header: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert header in error["message"]
    assert error["code"] == "mock_bad_control"
    # The queued failure was not used up by the rejected request.
    assert http.post(mock_upstream.url + CHAT, json=chat()).status_code == 503


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"messages": []}'])
def test_model_request_needs_json_object_with_model(
    http: httpx.Client, mock_upstream: MockUpstream, body: bytes
) -> None:
    response = http.post(mock_upstream.url + CHAT, content=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_hang_until_client_leaves(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    with pytest.raises(httpx.ReadTimeout):
        http.post(mock_upstream.url + CHAT, json=chat(), headers={"x-mock-hang": "1"}, timeout=0.3)
    wait_until(lambda: mock_upstream.disconnects == 1, timeout=5)
    assert mock_upstream.in_flight == 0
    record = mock_upstream.requests[-1]
    assert record.disconnected is True
    assert record.status is None


def test_disconnect_mid_stream(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    headers = {"x-mock-chunks": "100", "x-mock-chunk-delay": "0.05"}
    with http.stream("POST", mock_upstream.url + CHAT, json=chat(stream=True), headers=headers) as response:
        pieces = response.iter_raw()  # kept in a name: a discarded iterator would close the stream
        assert next(pieces).startswith(b"data: ")
        assert mock_upstream.in_flight == 1
    # Leaving the block closes the connection with 98+ chunks still unsent.
    wait_until(lambda: mock_upstream.disconnects == 1, timeout=5)
    wait_until(lambda: mock_upstream.in_flight == 0, timeout=5)
    assert mock_upstream.requests[-1].disconnected is True


def test_disconnect_during_delay(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    with pytest.raises(httpx.ReadTimeout):
        http.post(mock_upstream.url + CHAT, json=chat(), headers={"x-mock-delay": "5"}, timeout=0.2)
    wait_until(lambda: mock_upstream.disconnects == 1, timeout=5)


def test_completed_requests_are_not_disconnects(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    with http.stream("POST", mock_upstream.url + CHAT, json=chat(stream=True)) as response:
        read_events(response)
    http.post(mock_upstream.url + CHAT, json=chat())
    time.sleep(0.1)
    assert mock_upstream.disconnects == 0
    assert not any(r.disconnected for r in mock_upstream.requests)


async def test_in_flight_counters(mock_upstream: MockUpstream) -> None:
    async with httpx.AsyncClient(base_url=mock_upstream.url) as client:
        calls = [
            asyncio.create_task(client.post(CHAT, json=chat(), headers={"x-mock-delay": "0.5"}))
            for _ in range(5)
        ]
        await asyncio.sleep(0.25)
        assert mock_upstream.in_flight == 5
        responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 5
    assert mock_upstream.in_flight == 0
    assert mock_upstream.max_in_flight == 5
    assert mock_upstream.stats() == {
        "name": "mock",
        "requests": 5,
        "in_flight": 0,
        "max_in_flight": 5,
        "disconnects": 0,
    }


def test_control_endpoints(http: httpx.Client, mock_upstream: MockUpstream) -> None:
    http.post(mock_upstream.url + CHAT, json=chat())
    mock_upstream.fail_next(3, 503)
    stats = http.get(mock_upstream.url + "/__mock/stats").json()
    assert stats["requests"] == 1
    assert http.post(mock_upstream.url + "/__mock/reset").json()["requests"] == 0
    # Control calls are neither recorded nor failed, and reset dropped the queued failures.
    assert mock_upstream.requests == []
    assert http.post(mock_upstream.url + CHAT, json=chat()).status_code == 200
    assert http.get(mock_upstream.url + "/__mock/nope").status_code == 404


def test_stop_is_prompt_with_a_hanging_request(http: httpx.Client) -> None:
    mock = MockUpstream("stopper").start()
    url = mock.url
    failures: list[BaseException] = []

    def hang() -> None:
        try:
            http.post(url + CHAT, json=chat(), headers={"x-mock-hang": "1"}, timeout=10)
        except httpx.HTTPError as exc:
            failures.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    wait_until(lambda: mock.in_flight == 1, timeout=5)
    started = time.monotonic()
    mock.stop()
    assert time.monotonic() - started < 2
    thread.join(5)
    assert len(failures) == 1, "the hanging client must see its connection closed"
    assert mock.disconnects == 0, "a shutdown is not a client disconnect"
    with pytest.raises(httpx.ConnectError):
        http.get(url + "/v1/models", timeout=1)


def test_lifecycle_errors(http: httpx.Client) -> None:
    mock = MockUpstream("life")
    with pytest.raises(RuntimeError, match="not started"):
        _ = mock.url
    with mock:
        with pytest.raises(RuntimeError, match="already started"):
            mock.start()
        assert http.get(mock.url + "/x").status_code == 200
    mock.stop()  # a second stop is harmless
    with pytest.raises(ValueError, match="name"):
        MockUpstream("")
