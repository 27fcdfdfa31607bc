"""Token limits through real gateway processes: two instances x two workers on one Redis.

Reservations, settlement and the x-ratelimit-* headers as clients see them, including the official
OpenAI SDK honouring `retry-after-ms` and `x-should-retry`. Token buckets refill at one token a
minute (or slower) wherever a level is asserted, so the refill over a test stays below the
tolerances; the bucket's exact state is read from Redis.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.integration.test_limits_gateway import (
    WORKERS,
    Reply,
    all_at_once,
    drop_keys,
    start_gateways,
    stop_gateway,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.processes import GatewayProcess, redis_available, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.redis]

KEY = "sk-tokens-1111"
PROMPT = "one two three"  # the mock counts words of every string: 4 prompt tokens with "user"
COMPLETION_TOKENS = 3  # the mock answers "hello from <name>"
ACTUAL = 4 + COMPLETION_TOKENS


def body(model: str, max_tokens: int | None = 100, **extra: Any) -> bytes:
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    return json.dumps(payload).encode()


def estimate(raw: bytes, max_tokens: int) -> int:
    return math.ceil(len(raw) / 4) + max_tokens


def post(gw: GatewayProcess, raw: bytes, headers: dict[str, str] | None = None, timeout: float = 15) -> Reply:
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            raw,
            {"content-type": "application/json", "connection": "close", **(headers or {})},
        )
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data, 0.0)
    finally:
        conn.close()


@dataclass
class Cluster:
    a: GatewayProcess
    b: GatewayProcess
    prefix: str
    redis: redis.Redis
    mocks: dict[str, MockUpstream]

    def level(self, limiter_id: str) -> float | None:
        """A token bucket's stored level (None: absent, which is full)."""
        value = self.redis.hget(f"{self.prefix}:{{{self.prefix}}}:tk:{limiter_id}", "tokens")
        return None if value is None else float(value)


def tokens(per_minute: int, burst: int) -> dict[str, int]:
    return {"tokens_per_minute": per_minute, "burst_tokens": burst}


def slow_tokens(burst: int) -> dict[str, int]:
    return tokens(1, burst)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if not redis_available(url, timeout=0.5):
        pytest.skip(f"no Redis answered PING at {url}")
    prefix = f"onwards-test-{uuid.uuid4().hex[:12]}"
    names = ("main", "exact", "stream", "sdk")
    with contextlib.ExitStack() as stack:
        mocks = {name: stack.enter_context(MockUpstream(name)) for name in names}
        client = redis.Redis.from_url(url)
        stack.callback(client.close)
        stack.callback(drop_keys, client, prefix)

        def v1(name: str) -> str:
            return mocks[name].url + "/v1"

        config = {
            "auth": {"key_definitions": {"tok": {"key": KEY, "token_limit": slow_tokens(100_000)}}},
            "targets": {
                "open": {"url": v1("main")},
                "exact": {"url": v1("exact"), "token_limit": slow_tokens(1_000)},
                "keyed": {"url": v1("main"), "keys": ["tok"], "rate_limit": {"requests_per_second": 0.001,
                                                                             "burst_size": 50}},
                "stream": {"url": v1("stream"), "token_limit": slow_tokens(10_000)},
                "stream_open": {"url": v1("stream")},
                # 1000 tokens a second, 400 at most: a refused request waits a fraction of a second.
                "quick": {"url": v1("sdk"), "token_limit": tokens(60_000, 400)},
                # 200 tokens a second: a request missing 250 tokens waits 1.25 s.
                "patient": {"url": v1("sdk"), "token_limit": tokens(12_000, 400)},
                "small": {"url": v1("sdk"), "token_limit": tokens(600, 50)},
                "default_cap": {"url": v1("main"), "default_max_tokens": 7, "token_limit": tokens(1, 1_000)},
            },
        }  # fmt: skip
        path = tmp_path_factory.mktemp("tokens") / "config.json"
        path.write_text(json.dumps(config))
        a = GatewayProcess(path, workers=WORKERS, redis_url=url, redis_prefix=prefix)
        b = GatewayProcess(path, workers=WORKERS, redis_url=url, redis_prefix=prefix)
        stack.callback(stop_gateway, a)
        stack.callback(stop_gateway, b)
        start_gateways(a, b, warm_model="open")
        yield Cluster(a, b, prefix, client, mocks)


# ---------------------------------------------------------------------------------------------
# Exactness


def test_reservations_never_exceed_the_bucket_and_settle_to_the_actual_usage(cluster: Cluster) -> None:
    raw = body("exact", max_tokens=100)
    cost = estimate(raw, 100)
    fits = 1_000 // cost
    assert 2 <= fits < 20
    # The upstream holds every admitted request for three seconds, so all twenty are decided while
    # the first reservations are still out: at most `fits` of them can hold tokens at once.
    slow = {"x-mock-delay": "3"}
    mock = cluster.mocks["exact"]
    results: list[list[Reply]] = []
    jobs = [(lambda gw=gw: post(gw, raw, slow)) for gw in [cluster.a, cluster.b] * 10]
    sender = threading.Thread(target=lambda: results.append(all_at_once(jobs)))
    sender.start()
    try:
        wait_until(lambda: mock.request_count == fits, timeout=10, message="admitted requests never arrived")
        # While they are held upstream, the bucket holds the burst less their reservations, exactly.
        held = cluster.level("target:exact")
        assert held is not None and 1_000 - fits * cost <= held <= 1_000 - fits * cost + 1, (held, fits)
    finally:
        sender.join(timeout=30)
    [replies] = results
    codes = [r.status for r in replies]
    assert codes.count(200) == fits, codes
    assert mock.request_count == fits
    assert mock.max_in_flight <= fits
    for refused in (r for r in replies if r.status == 429):
        assert refused.json()["error"]["type"] == "tokens", refused
        assert int(refused.headers["retry-after-ms"]) > 0, refused.headers
    # Settled: the bucket holds the burst minus what the admitted requests really used (plus a refill
    # of one token a minute over the test).
    level = cluster.level("target:exact")
    assert level is not None
    assert 1_000 - fits * ACTUAL <= level <= 1_000 - fits * ACTUAL + 1, (level, fits)


def test_a_missing_output_cap_reserves_the_targets_default(cluster: Cluster) -> None:
    raw = body("default_cap", max_tokens=None)
    reply = post(cluster.a, raw)
    assert reply.status == 200, reply
    # The headers show the admission: the burst less the estimate with default_max_tokens 7.
    assert int(reply.headers["x-ratelimit-remaining-tokens"]) == 1_000 - estimate(raw, 7)
    assert reply.headers["x-ratelimit-limit-tokens"] == "1000"


def test_key_and_request_headers_together(cluster: Cluster) -> None:
    reply = post(cluster.b, body("keyed"), {"authorization": f"Bearer {KEY}"})
    assert reply.status == 200, reply
    assert reply.headers["x-ratelimit-limit-requests"] == "50"
    assert int(reply.headers["x-ratelimit-remaining-requests"]) <= 49
    assert reply.headers["x-ratelimit-reset-requests"].endswith("s")
    assert reply.headers["x-ratelimit-limit-tokens"] == "100000"
    assert "x-ratelimit-reset-tokens" in reply.headers


def test_no_headers_where_no_limit_applies(cluster: Cluster) -> None:
    reply = post(cluster.a, body("open"))
    assert reply.status == 200
    assert not [name for name in reply.headers if name.startswith("x-ratelimit-")], reply.headers


# ---------------------------------------------------------------------------------------------
# Streams


def events(data: bytes) -> list[Any]:
    out: list[Any] = []
    for block in data.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[6:]
            out.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    return out


def comparable(stream: list[Any]) -> list[Any]:
    """The stream without what differs per reply (id, timestamp, the alias asked for)."""
    volatile = ("id", "created", "model")
    return [e if isinstance(e, str) else {k: v for k, v in e.items() if k not in volatile} for e in stream]


def test_a_stream_that_did_not_ask_for_usage_is_unchanged_and_still_settled(cluster: Cluster) -> None:
    mock = cluster.mocks["stream"]
    mock.clear()
    before = cluster.level("target:stream")
    raw = body("stream", max_tokens=50, stream=True)
    reply = post(cluster.a, raw, {"x-mock-chunks": "4"})
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["x-ratelimit-limit-tokens"] == "10000"
    # The gateway asked the provider for usage ...
    [upstream] = mock.requests
    assert upstream.json()["stream_options"] == {"include_usage": True}
    # ... and the client got exactly what an unlimited alias (which asks for nothing) streams.
    plain = post(cluster.a, body("stream_open", max_tokens=50, stream=True), {"x-mock-chunks": "4"})
    assert "stream_options" not in mock.requests[-1].json()
    assert comparable(events(reply.body)) == comparable(events(plain.body))
    assert all("usage" not in e for e in events(reply.body) if isinstance(e, dict))
    level = cluster.level("target:stream")
    assert level is not None
    assert level == pytest.approx((10_000 if before is None else before) - ACTUAL, abs=1)


def test_a_stream_that_asked_for_usage_keeps_its_usage_chunk(cluster: Cluster) -> None:
    before = cluster.level("target:stream")
    raw = body("stream", max_tokens=50, stream=True, stream_options={"include_usage": True})
    reply = post(cluster.b, raw, {"x-mock-chunks": "3"})
    assert reply.status == 200, reply
    stream = events(reply.body)
    assert stream[-1] == "[DONE]"
    assert stream[-2]["choices"] == [] and stream[-2]["usage"]["total_tokens"] == ACTUAL
    level = cluster.level("target:stream")
    assert level is not None
    assert level == pytest.approx((10_000 if before is None else before) - ACTUAL, abs=1)


# ---------------------------------------------------------------------------------------------
# 429s and the OpenAI SDK


def sdk(gw: GatewayProcess, retries: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=retries, timeout=20)


def test_the_sdk_sees_the_headers_on_json_and_on_streams(cluster: Cluster) -> None:
    client = sdk(cluster.a, 0)
    raw = client.chat.completions.with_raw_response.create(
        model="quick", messages=[{"role": "user", "content": PROMPT}], max_tokens=10
    )
    assert raw.headers["x-ratelimit-limit-tokens"] == "400"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 400
    assert raw.parse().usage.total_tokens == ACTUAL
    with client.chat.completions.with_streaming_response.create(
        model="quick", messages=[{"role": "user", "content": PROMPT}], max_tokens=10, stream=True
    ) as streamed:
        assert streamed.headers["x-ratelimit-limit-tokens"] == "400"
        chunks = list(streamed.parse())
    assert chunks and all(chunk.usage is None for chunk in chunks)


def test_the_sdk_waits_out_retry_after_ms(cluster: Cluster) -> None:
    # A first request holds most of the bucket (200 tokens a second, 400 at most) for three seconds.
    # The next one is refused with a retry-after-ms of over a second: with one retry allowed, only a
    # client that waits that long (not its own default backoff of under a second) gets through.
    mock = cluster.mocks["sdk"]
    mock.clear()
    holder = threading.Thread(
        target=post, args=(cluster.a, body("patient", max_tokens=300), {"x-mock-delay": "3"})
    )
    holder.start()
    try:
        wait_until(lambda: mock.request_count == 1, timeout=10, message="the first request never arrived")
        refused = post(cluster.b, body("patient", max_tokens=300))
        assert refused.status == 429, refused
        wait_ms = int(refused.headers["retry-after-ms"])
        assert 500 < wait_ms <= 2_000, refused.headers
        assert refused.headers["retry-after"] == str(math.ceil(wait_ms / 1000))
        completion = sdk(cluster.b, 1).chat.completions.create(
            model="patient", messages=[{"role": "user", "content": PROMPT}], max_tokens=300
        )
        assert completion.usage.total_tokens == ACTUAL
    finally:
        holder.join(timeout=20)
    # The SDK was refused once and came back when the bucket had room: two refusals in all.
    assert _logged(cluster, 2, "target=patient", "status=429") == 2


def _logged(cluster: Cluster, at_least: int, *needles: str) -> int:
    """The access lines with every needle, once at least `at_least` are there (workers write their
    access log in batches, within 100 ms)."""
    wait_until(lambda: _access_lines(cluster, *needles) >= at_least, timeout=10, message=f"{needles}")
    return _access_lines(cluster, *needles)


def _access_lines(cluster: Cluster, *needles: str) -> int:
    lines = (cluster.a.output() + cluster.b.output()).splitlines()
    return sum(1 for line in lines if "onwards.access" in line and all(n in line for n in needles))


def test_a_request_larger_than_the_bucket_is_not_retried(cluster: Cluster) -> None:
    mock = cluster.mocks["sdk"]
    mock.clear()
    reply = post(cluster.a, body("small", max_tokens=500))
    assert reply.status == 429
    assert reply.headers["x-should-retry"] == "false"
    assert "retry-after" not in reply.headers and "retry-after-ms" not in reply.headers
    error = reply.json()["error"]
    assert error["type"] == "tokens" and error["code"] == "rate_limit", error
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(cluster.b, 3).chat.completions.create(
            model="small", messages=[{"role": "user", "content": PROMPT}], max_tokens=500
        )
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert mock.request_count == 0
    # The SDK asked once: the gateway logged one refusal for it (besides the raw request above).
    assert _logged(cluster, 2, "target=small", "status=429") == 2


# ---------------------------------------------------------------------------------------------
# Usage accounting


def test_usage_is_counted_by_target_provider_and_key_name_summed_over_workers(cluster: Cluster) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    replies = all_at_once([(lambda: post(cluster.b, body("keyed"), headers)) for _ in range(6)])
    assert [r.status for r in replies] == [200] * 6
    text = httpx.get(cluster.b.metrics_url, timeout=5).text
    labels = 'key="tok",kind="{kind}",provider="keyed/0",target="keyed"'
    # Labels print in alphabetical order; earlier tests may have used the alias too (>=).
    prompt = _sample(text, "onwards_tokens_total", labels.format(kind="prompt"))
    completion = _sample(text, "onwards_tokens_total", labels.format(kind="completion"))
    assert prompt >= 6 * 4 and completion >= 6 * COMPLETION_TOKENS
    assert KEY not in text  # names only, never the token
    needles = ("target=keyed", "prompt_tokens=4", f"completion_tokens={COMPLETION_TOKENS}")
    assert _logged(cluster, 6, *needles) >= 6


def _sample(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not in the scrape")
