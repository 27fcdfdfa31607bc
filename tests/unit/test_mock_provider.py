"""The built-in mock provider: its builders, its response object, and the `mock://` config form."""

from __future__ import annotations

import asyncio
import base64
import struct

import orjson
import pytest

from onwards.config import ConfigError, parse_config_bytes
from onwards.config.model import MockSpec
from onwards.mock_provider import MockProvider, MockResponse, embedding_vector

SPEC = MockSpec()


def run(coro):
    return asyncio.run(coro)


def post(path: str, body: object, spec: MockSpec = SPEC) -> MockResponse:
    return run(MockProvider(spec, "demo").request("POST", path, orjson.dumps(body)))


async def drain(response: MockResponse) -> list[bytes]:
    chunks = []
    while chunk := await response.content.readany():
        chunks.append(chunk)
    return chunks


def chat(**extra: object) -> dict[str, object]:
    return {"model": "demo", "messages": [{"role": "user", "content": "Hello  there"}], **extra}


def test_chat_completion_echoes_the_last_user_message_with_usage():
    response = post("/v1/chat/completions", chat())
    assert response.status == 200
    assert response.headers.get("content-type") == "application/json"
    body = orjson.loads(run(response.read()))
    assert response.content_length == len(orjson.dumps(body))
    assert body["object"] == "chat.completion"
    assert body["model"] == "demo"
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "This is the Onwards mock provider. You said: Hello there",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 10, "total_tokens": 12}


def test_fixed_reply_and_max_tokens_cut():
    spec = MockSpec(reply="one two three four")
    body = orjson.loads(run(post("/chat/completions", chat(max_tokens=2), spec).read()))
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_content_parts_are_read_as_text():
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a b"}]}]}
    answer = orjson.loads(run(post("/v1/chat/completions", body).read()))
    assert answer["choices"][0]["message"]["content"].endswith("You said: a b")
    assert answer["usage"]["prompt_tokens"] == 2


def events_of(chunks: list[bytes]) -> list[object]:
    joined = b"".join(chunks)
    assert joined.endswith(b"data: [DONE]\n\n")
    return [orjson.loads(e[6:]) for e in joined.split(b"\n\n") if e and e != b"data: [DONE]"]


def test_stream_without_usage_option_has_no_usage_chunk():
    response = post("/v1/chat/completions", chat(stream=True))
    assert response.headers.get("Content-Type") == "text/event-stream"
    assert response.content_length is None
    events = events_of(run(drain(response)))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == "This is the Onwards mock provider. You said: Hello there"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in e for e in events)
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert len({e["id"] for e in events}) == 1


def test_stream_with_include_usage_ends_with_a_usage_chunk():
    events = events_of(
        run(drain(post("/v1/chat/completions", chat(stream=True, stream_options={"include_usage": True}))))
    )
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 10, "total_tokens": 12}


def test_stream_pauses_between_events_not_before_the_first():
    slept: list[float] = []

    async def scenario():
        real_sleep = asyncio.sleep

        async def fake_sleep(seconds: float) -> None:
            slept.append(seconds)
            await real_sleep(0)

        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            provider = MockProvider(MockSpec(delay_ms=250, stream_delay_ms=20, reply="a b"), "demo")
            response = await provider.request("POST", "/v1/chat/completions", orjson.dumps(chat(stream=True)))
            assert slept == [0.25]  # the delay before the headers
            chunks = await drain(response)
        finally:
            asyncio.sleep = real_sleep  # type: ignore[assignment]
        return chunks

    chunks = run(scenario())
    # role, "a", " b", finish, [DONE]: four pauses between five events.
    assert len(chunks) == 5
    assert slept == [0.25] + [0.02] * 4


def test_embeddings_float_and_base64_agree_and_are_deterministic():
    floats = orjson.loads(
        run(post("/v1/embeddings", {"model": "e", "input": ["x", "y"], "dimensions": 8}).read())
    )
    b64 = orjson.loads(
        run(
            post(
                "/v1/embeddings",
                {"model": "e", "input": ["x", "y"], "dimensions": 8, "encoding_format": "base64"},
            ).read()
        )
    )
    assert [d["index"] for d in floats["data"]] == [0, 1]
    first = floats["data"][0]["embedding"]
    assert len(first) == 8
    assert first != floats["data"][1]["embedding"]
    decoded = list(struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"])))
    assert decoded == first
    assert embedding_vector("x", 8) == first
    assert abs(sum(v * v for v in first) - 1) < 1e-5
    assert floats["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_embeddings_default_dimensions_come_from_the_spec():
    body = orjson.loads(
        run(post("/v1/embeddings", {"model": "e", "input": "x"}, MockSpec(embedding_dimensions=3)).read())
    )
    assert len(body["data"][0]["embedding"]) == 3


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"model": "e", "input": 5}, "input"),
        ("/v1/embeddings", {"model": "e", "input": "x", "dimensions": 0}, "dimensions"),
        ("/v1/embeddings", {"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ("/v1/chat/completions", {"model": "m", "messages": []}, "messages"),
    ],
)
def test_bad_requests_get_openai_400s(path, body, param):
    response = post(path, body)
    assert response.status == 400
    error = orjson.loads(run(response.read()))["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_not_json_unknown_path_and_wrong_method():
    provider = MockProvider(SPEC, "demo")
    assert run(provider.request("POST", "/v1/chat/completions", b"{nope")).status == 400
    assert run(provider.request("POST", "/v1/chat/completions", b"[1]")).status == 400
    missing = run(provider.request("POST", "/v1/audio/speech", b"{}"))
    assert missing.status == 404
    assert "error" in orjson.loads(run(missing.read()))
    assert run(provider.request("GET", "/v1/chat/completions", b"")).status == 405


def test_models_lists_the_default_model():
    response = run(MockProvider(SPEC, "demo").request("GET", "/v1/models?x=1", b""))
    body = orjson.loads(run(response.read()))
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["demo"]


def test_read_after_partial_readany_returns_the_rest_and_release_marks():
    response = post("/v1/chat/completions", chat(stream=True))
    first = run(response.content.readany())
    rest = run(response.read())
    assert first.startswith(b"data: ") and rest.endswith(b"data: [DONE]\n\n")
    assert run(response.content.readany()) == b""
    response.release()
    assert response.released


# --------------------------------------------------------------------------------------------
# Config


def load(provider: dict[str, object]):
    doc = {"targets": {"demo": provider}}
    return parse_config_bytes(orjson.dumps(doc), "config.json").targets["demo"].providers[0]


def test_mock_url_forms_and_defaults():
    assert load({"url": "mock://"}).mock == MockSpec()
    named = load({"url": "mock://second"})
    assert named.mock == MockSpec() and named.url == "mock://second/"
    assert load({"url": "https://api.openai.com/v1"}).mock is None


def test_mock_settings():
    provider = load(
        {
            "url": "mock://",
            "mock": {"delay_ms": 50, "stream_delay_ms": 2.5, "reply": "hi", "embedding_dimensions": 4},
        }
    )
    assert provider.mock == MockSpec(delay_ms=50.0, stream_delay_ms=2.5, reply="hi", embedding_dimensions=4)


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (
            {"url": "mock://x/v1"},
            "url: a mock provider url is mock:// or mock://<name>, with nothing after it",
        ),
        (
            {"url": "mock://?delay=1"},
            "url: a mock provider url is mock:// or mock://<name>, with nothing after it",
        ),
        ({"url": "http://h/", "mock": {}}, "mock: applies only to a provider whose url is mock://"),
        ({"url": "mock://", "mock": {"delay_ms": -1}}, "mock.delay_ms: must be a number >= 0 (milliseconds)"),
        (
            {"url": "mock://", "mock": {"stream_delay_ms": "1"}},
            "mock.stream_delay_ms: must be a number >= 0 (milliseconds)",
        ),
        (
            {"url": "mock://", "mock": {"embedding_dimensions": 5000}},
            "mock.embedding_dimensions: must be an integer from 1 to 4096",
        ),
        ({"url": "mock://", "mock": {"reply": ""}}, "mock.reply: must be a non-empty string"),
    ],
)
def test_mock_config_errors(provider, message):
    with pytest.raises(ConfigError) as info:
        load(provider)
    assert str(info.value) == f"config.json: targets.demo.{message}"
