"""Small surface details as the Rust onwards has them: forwarded headers, the messages for an
unparseable body, a bad model-override and an empty pool."""

from __future__ import annotations

import pytest

from onwards import errors
from tests.support.app_client import app_client
from tests.support.mock_upstream import MockUpstream

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt", "messages": []}


@pytest.fixture
def mock_a(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("a")


def single(mock: MockUpstream) -> dict:
    return {"targets": {"gpt": {"url": mock.url + "/v1"}, "empty": {"providers": []}}}


async def test_filter_headers_adds_x_forwarded_proto_and_appends_x_forwarded_for(write_config, mock_a):
    async with app_client(write_config(single(mock_a))) as client:
        plain = await client.post(CHAT, json=BODY)
        chained = await client.post(
            CHAT, json=BODY, headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "http"}
        )
    assert plain.status_code == chained.status_code == 200
    first, second = mock_a.requests
    assert first.headers["x-forwarded-proto"] == "https"
    assert first.headers["x-forwarded-for"] == "127.0.0.1"  # httpx's ASGI transport's client address
    assert second.headers["x-forwarded-proto"] == "https"
    assert second.headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"


async def test_unparseable_body_is_the_could_not_parse_model_error(write_config, mock_a):
    async with app_client(write_config(single(mock_a))) as client:
        r = await client.post(CHAT, content=b"{not json")
    assert r.status_code == 400
    assert r.content == errors.MISSING_MODEL
    assert r.json()["error"]["param"] == "model"


async def test_model_override_with_spaces_is_looked_up(write_config, mock_a):
    async with app_client(write_config(single(mock_a))) as client:
        r = await client.post(CHAT, json=BODY, headers={"model-override": "two words"})
    assert r.status_code == 404
    assert (
        r.json()["error"]["message"]
        == "The model `two words` does not exist or you do not have access to it."
    )


async def test_empty_pool_is_503_with_rusts_message(write_config, mock_a):
    async with app_client(write_config(single(mock_a))) as client:
        r = await client.post(CHAT, json={**BODY, "model": "empty"})
    assert r.status_code == 503
    assert r.json() == {
        "error": {
            "message": "An internal error occurred. Please try again later.",
            "type": "internal_error",
            "param": None,
            "code": "service_unavailable",
        }
    }
