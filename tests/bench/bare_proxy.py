"""The bare proxy: the least a Python forwarder on Granian can do, the yardstick for the gateway.

Starlette on Granian (N workers, uvloop), one pooled upstream client per worker, no auth, no limits,
no metrics: read the body, forward it to the one upstream, send the answer back (streamed when it is
an event stream). Whatever the gateway costs beyond this is its own overhead.

``--client`` picks the upstream client, so the same forwarder also measures httpx against aiohttp.
``--gc-tuning`` gives it the gateway's garbage-collector settings (onwards/gc_tuning.py), so the
benchmark can show what the gateway gains from them apart from everything else.

    python -m tests.bench.bare_proxy --upstream http://127.0.0.1:8001 --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from onwards.gc_tuning import tune_for_serving
from tests.support.processes import LOOPBACK, ManagedProcess, http_status

CLIENTS = ("aiohttp", "httpx")
ENV = "ONWARDS_BENCH_BARE_PROXY"
# Headers that describe one hop, not the message; each side sets its own.
_HOP = frozenset({"host", "connection", "keep-alive", "content-length", "transfer-encoding", "te", "upgrade"})

Forward = Callable[[Request], Awaitable[Response]]


def _request_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k not in _HOP}


def _aiohttp_forwarder(upstream: str) -> tuple[Forward, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=90),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )

    async def forward(request: Request) -> Response:
        body = await request.body()
        upstream_response = await session.request(
            request.method, upstream + request.url.path, headers=_request_headers(request), data=body or None
        )
        content_type = upstream_response.headers.get("Content-Type", "application/octet-stream")
        if content_type.startswith("text/event-stream"):

            async def chunks() -> AsyncIterator[bytes]:
                async for chunk in upstream_response.content.iter_any():
                    yield chunk

            return StreamingResponse(
                chunks(),
                status_code=upstream_response.status,
                media_type=content_type,
                background=BackgroundTask(upstream_response.release),
            )
        data = await upstream_response.read()
        upstream_response.release()
        return Response(data, status_code=upstream_response.status, media_type=content_type)

    return forward, session.close


def _httpx_forwarder(upstream: str) -> tuple[Forward, Callable[[], Awaitable[None]]]:
    import httpx

    # Room for every concurrent request, so the pool never queues or churns: what is measured is
    # the pool's own cost, not a limit.
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=90),
        timeout=httpx.Timeout(None, connect=30),
        trust_env=False,
    )

    async def forward(request: Request) -> Response:
        body = await request.body()
        outgoing = client.build_request(
            request.method, upstream + request.url.path, headers=_request_headers(request), content=body
        )
        upstream_response = await client.send(outgoing, stream=True)
        content_type = upstream_response.headers.get("content-type", "application/octet-stream")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(
                upstream_response.aiter_raw(),
                status_code=upstream_response.status_code,
                media_type=content_type,
                background=BackgroundTask(upstream_response.aclose),
            )
        try:
            data = await upstream_response.aread()
        finally:
            await upstream_response.aclose()
        return Response(data, status_code=upstream_response.status_code, media_type=content_type)

    return forward, client.aclose


def create_app() -> Starlette:
    """The application factory Granian calls in each worker; settings come from the environment."""
    settings = json.loads(os.environ[ENV])
    upstream: str = settings["upstream"].rstrip("/")
    client: str = settings["client"]
    gc_tuning: bool = settings.get("gc_tuning", False)
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}, expected one of {CLIENTS}")
    holder: dict[str, Forward] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # The client is made inside the worker's running loop: aiohttp binds its session to it.
        make = _aiohttp_forwarder if client == "aiohttp" else _httpx_forwarder
        forward, close = make(upstream)
        holder["forward"] = forward
        if gc_tuning:
            tune_for_serving()
        try:
            yield
        finally:
            await close()

    async def proxy(request: Request) -> Response:
        return await holder["forward"](request)

    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/__bare/health", health, methods=["GET"]),
            Route("/{path:path}", proxy, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ],
        lifespan=lifespan,
    )


class BareProxy(ManagedProcess):
    label = "bare-proxy"

    def __init__(
        self, upstream: str, port: int, workers: int, client: str = "aiohttp", gc_tuning: bool = False
    ) -> None:
        if client not in CLIENTS:
            raise ValueError(f"unknown client {client!r}, expected one of {CLIENTS}")
        self.port = port
        self.workers = workers
        self.client = client
        argv = [sys.executable, "-m", "tests.bench.bare_proxy", "--upstream", upstream]
        argv += ["--port", str(port), "--workers", str(workers), "--client", client]
        if gc_tuning:
            argv.append("--gc-tuning")
        super().__init__(argv)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        return http_status(LOOPBACK, self.port, "/__bare/health") == 200


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--upstream", required=True, help="base URL of the upstream, e.g. http://127.0.0.1:8001"
    )
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--client", choices=CLIENTS, default="aiohttp", help="upstream HTTP client (aiohttp)")
    parser.add_argument(
        "--gc-tuning", action="store_true", help="the gateway's garbage-collector settings (off)"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not args.upstream.startswith(("http://", "https://")):
        parser.error(f"--upstream must be an http(s) URL, got {args.upstream!r}")
    os.environ[ENV] = json.dumps(
        {"upstream": args.upstream, "client": args.client, "gc_tuning": args.gc_tuning}
    )

    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    # The same server settings as the gateway's (onwards/cli.py), so only the app differs.
    Server(
        "tests.bench.bare_proxy:create_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        loop=Loops.uvloop,
        backlog=2048,
        backpressure=4096,
        log_level=LogLevels.warning,
        log_access=False,
    ).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
