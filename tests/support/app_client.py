"""The whole app in process with its lifespan running, driven by httpx over ASGI."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from onwards.app import create_app
from onwards.settings import Settings


@contextlib.asynccontextmanager
async def app_client(config_path: Path, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    """``async with app_client(path) as client``; ``client.gateway`` is the worker's Gateway."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        options: dict[str, object] = {"watch": False, "metrics": False, "log_level": "warning", **settings}
        app = create_app(Settings(targets=str(config_path), **options))  # type: ignore[arg-type]
    finally:
        # create_app installs the gateway's own log handler; pytest's capture must stay in place.
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    async with app.starlette.router.lifespan_context(app.starlette):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=10) as client:
            client.gateway = app.gateway  # type: ignore[attr-defined]
            yield client
