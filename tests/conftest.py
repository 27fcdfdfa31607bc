"""Fixtures shared by unit and integration tests: mock upstreams, Redis, config files, gateways."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mock_upstream import MockUpstream
from tests.support.processes import GatewayProcess, free_port, redis_available
from tests.support.redis_server import RedisServer

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def mock_upstream() -> Iterator[MockUpstream]:
    """A started mock upstream named "mock"."""
    with MockUpstream("mock") as mock:
        yield mock


@pytest.fixture
def mock_upstream_factory() -> Iterator[Callable[..., MockUpstream]]:
    """``make(name, **settings)`` starts another mock upstream; all are stopped at teardown."""
    started: list[MockUpstream] = []

    def make(name: str = "mock", **settings: Any) -> MockUpstream:
        mock = MockUpstream(name, **settings).start()
        started.append(mock)
        return mock

    yield make
    for mock in reversed(started):
        mock.stop()


@pytest.fixture
def redis_url() -> str:
    """REDIS_URL or the local default; the test is skipped when no Redis answers PING in 0.5 s."""
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not redis_available(url, timeout=0.5):
        pytest.skip(f"no Redis answered PING at {url}")
    return url


@pytest.fixture
def unique_prefix() -> str:
    """A key prefix no other test or concurrent run uses."""
    return f"onwards-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """``write(config, name="config.json")`` dumps ``config`` as JSON and returns the file's path.

    The file is written next to its final name and renamed over it, so a watching gateway never reads
    a half-written file; a test that wants in-place writes can write the path itself.
    """

    def write(config: Any, name: str = "config.json") -> Path:
        path = tmp_path / name
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        staging.write_text(json.dumps(config, indent=2))
        os.replace(staging, path)
        return path

    return write


@pytest.fixture
def gateway() -> Iterator[Callable[..., GatewayProcess]]:
    """``start(config_path=None, **options)`` runs a gateway until /health is 200 (see GatewayProcess).

    Every gateway is stopped at teardown; its output is printed there so a failing test shows it.
    """
    started: list[GatewayProcess] = []

    def start(config_path: str | os.PathLike[str] | None = None, **options: Any) -> GatewayProcess:
        process = GatewayProcess(config_path, **options)
        started.append(process)
        return process.start()

    yield start
    for process in reversed(started):
        process.stop()
        print(f"--- {process.describe()}")
        process.close()


@pytest.fixture
def private_redis() -> Iterator[Callable[[int | None], RedisServer]]:
    """``start(port=None)`` runs a private redis-server; all are killed at teardown."""
    started: list[RedisServer] = []

    def start(port: int | None = None) -> RedisServer:
        server = RedisServer(port or free_port())
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.close()
