"""The gateway's own routes and what is proxied, after the Rust onwards: every path that is not
the gateway's own is proxied (with or without /v1), /v1/models/{id} is answered locally in the
OpenAI shape, other methods on the models routes get 405, `owned_by` is "None"."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from onwards.app import create_app
from onwards.settings import Settings
from tests.support.mock_upstream import MockUpstream


@pytest.fixture
def app_client(write_config):
    @contextlib.asynccontextmanager
    async def run(config: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        try:
            app = create_app(
                Settings(targets=str(write_config(config)), watch=False, metrics=False, log_level="warning")
            )
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        async with app.starlette.router.lifespan_context(app.starlette):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=10) as client:
                yield client

    return run


@pytest.fixture
def mock_a(mock_upstream_factory) -> MockUpstream:
    return mock_upstream_factory("a")


def config(mock: MockUpstream) -> dict[str, Any]:
    return {
        "targets": {
            "open": {"url": mock.url},
            "keyed": {"url": mock.url, "keys": ["sk-1"]},
        }
    }


async def test_models_endpoint_returns_owned_by_none(app_client, mock_a):
    async with app_client(config(mock_a)) as client:
        r = await client.get("/v1/models")
    assert r.status_code == 200
    assert [m["owned_by"] for m in r.json()["data"]] == ["None"]


async def test_get_model_by_id_is_answered_locally_in_openai_shape(app_client, mock_a):
    async with app_client(config(mock_a)) as client:
        r = await client.get("/v1/models/keyed", headers={"authorization": "Bearer sk-1"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "object", "created", "owned_by"}
    assert (body["id"], body["object"], body["owned_by"]) == ("keyed", "model", "None")
    assert abs(body["created"] - time.time()) < 60
    assert mock_a.request_count == 0


@pytest.mark.parametrize(
    ("alias", "headers"), [("keyed", {}), ("keyed", {"authorization": "Bearer sk-x"}), ("nope", {})]
)
async def test_get_model_by_id_is_404_for_an_alias_the_key_may_not_use(app_client, mock_a, alias, headers):
    async with app_client(config(mock_a)) as client:
        r = await client.get(f"/v1/models/{alias}", headers=headers)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert mock_a.request_count == 0


@pytest.mark.parametrize("path", ["/v1/models", "/models", "/v1/models/open"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_on_models_are_405(app_client, mock_a, path, method):
    async with app_client(config(mock_a)) as client:
        r = await client.request(method, path, headers={"model-override": "open"})
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert mock_a.request_count == 0


@pytest.mark.parametrize("path", ["/chat/completions", "/ai/v1/chat/completions", "/rerank", "/models-extra"])
async def test_paths_without_v1_are_proxied(app_client, mock_a, path):
    async with app_client(config(mock_a)) as client:
        r = await client.post(path, json={"model": "open", "messages": []})
    assert r.status_code == 200, r.text
    [seen] = mock_a.requests
    assert seen.path == path


async def test_health_is_the_gateways_own_and_root_is_404(app_client, mock_a):
    async with app_client(config(mock_a)) as client:
        health = await client.get("/health")
        root = await client.post("/", json={"model": "open"})
    assert health.status_code == 200
    assert root.status_code == 404
    assert mock_a.request_count == 0
