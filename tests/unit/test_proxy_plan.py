"""The compiled plan: upstream URL joining (behaviour reference §3.5) and merged response headers."""

from __future__ import annotations

import pytest

from onwards.config import parse_config
from onwards.proxy.plan import ProviderPlan, compile_config, upstream_url


def plan_for(url: str, **provider: object) -> ProviderPlan:
    snapshot = parse_config({"targets": {"m": {"providers": [{"url": url, **provider}]}}}, "test.json")
    return compile_config(snapshot).targets["m"].providers[0]


def join(url: str, path: str, query: bytes = b"") -> str:
    return upstream_url(plan_for(url), path, query)


# Every row of the table in the behaviour reference, §3.5.
@pytest.mark.parametrize(
    ("url", "path", "query", "expected"),
    [
        ("https://api.openai.com", "/v1/chat/completions", b"", "https://api.openai.com/v1/chat/completions"),
        (
            "https://api.openai.com/v1",
            "/v1/chat/completions",
            b"",
            "https://api.openai.com/v1/chat/completions",
        ),
        (
            "https://api.openai.com/v1/",
            "/v1/chat/completions",
            b"",
            "https://api.openai.com/v1/chat/completions",
        ),
        (
            "https://api.example.com/v2/",
            "/v1/chat/completions",
            b"",
            "https://api.example.com/v2/v1/chat/completions",
        ),
        ("https://api.example.com/", "/v1/v1/something", b"", "https://api.example.com/v1/v1/something"),
        (
            "https://api.openai.com/v1/",
            "/v1/chat/completions",
            b"stream=true",
            "https://api.openai.com/v1/chat/completions?stream=true",
        ),
        ("https://api.example.com/v1/", "/v1x/something", b"", "https://api.example.com/v1/v1x/something"),
    ],
)
def test_reference_table(url, path, query, expected):
    assert join(url, path, query) == expected


def test_only_a_leading_duplicate_prefix_is_removed():
    # Once: a second /v1 is part of the request path.
    assert join("https://h/v1", "/v1/v1/x") == "https://h/v1/v1/x"
    # Not in the middle of the path.
    assert join("https://h/v1", "/a/v1/x") == "https://h/v1/a/v1/x"


def test_multi_segment_provider_path_is_deduplicated_as_a_whole():
    assert join("https://h/openai/v1", "/openai/v1/embeddings") == "https://h/openai/v1/embeddings"
    # Only the first segment matching is not a duplicate.
    assert join("https://h/openai/v1", "/openai/embeddings") == "https://h/openai/v1/openai/embeddings"


def test_request_for_exactly_the_provider_path():
    assert join("https://h/v1", "/v1") == "https://h/v1/"


def test_port_and_scheme_are_kept():
    assert join("http://127.0.0.1:8000/v1", "/v1/models") == "http://127.0.0.1:8000/v1/models"


def test_query_string_is_passed_as_sent():
    assert (
        join("https://h", "/v1/files", b"purpose=fine-tune&limit=10&after=a%2Fb")
        == "https://h/v1/files?purpose=fine-tune&limit=10&after=a%2Fb"
    )


def test_empty_query_adds_no_question_mark():
    assert join("https://h", "/v1/models", b"") == "https://h/v1/models"


def test_percent_encoded_path_is_not_decoded():
    # The handler passes the raw path: %2F must stay an escaped slash, %20 an escaped space.
    assert join("https://h/v1", "/v1/files/a%2Fb/x%20y") == "https://h/v1/files/a%2Fb/x%20y"
    assert join("https://h/v1", "/v1%2Fchat") == "https://h/v1/v1%2Fchat"


def test_response_headers_merge_pool_then_provider_lower_cased():
    snapshot = parse_config(
        {
            "targets": {
                "m": {
                    "response_headers": {"X-Pool": "pool", "X-Shared": "pool"},
                    "providers": [
                        {"url": "http://a", "response_headers": {"x-shared": "provider", "X-Own": "a"}},
                        {"url": "http://b"},
                    ],
                }
            }
        },
        "test.json",
    )
    first, second = compile_config(snapshot).targets["m"].providers
    assert dict(first.response_headers) == {b"x-pool": b"pool", b"x-shared": b"provider", b"x-own": b"a"}
    assert first.overridden == frozenset({b"x-pool", b"x-shared", b"x-own"})
    assert dict(second.response_headers) == {b"x-pool": b"pool", b"x-shared": b"pool"}


def test_plan_carries_auth_timeout_and_sanitize():
    plan = plan_for(
        "http://a/v1",
        onwards_key="sk-1",
        upstream_auth_header_name="api-key",
        upstream_auth_header_prefix="",
        request_timeout_secs=2.5,
        sanitize_response=True,
    )
    assert plan.auth == ("api-key", "sk-1")
    assert plan.timeout == 2.5
    assert plan.sanitize is True
    assert plan.dedupe == "v1"
    assert plan.url == "http://a/v1/"
    assert "sk-1" not in plan.label
