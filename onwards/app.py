"""The ASGI application one Granian worker runs, and the worker lifespan that wires its parts.

Every HTTP request first passes the front (onwards/edge/front.py: the path check, CORS). Starlette
serves the gateway's own routes (/health, /ready, /models, /v1/models and /v1/models/{id}; other
methods there get 405) and owns the lifespan. Every other path, with or without /v1, is proxied: it
is dispatched before Starlette's router, straight to the raw ASGI ProxyHandler, because it is the
hot path, and is tracked so a graceful drain (onwards/edge/drain.py) can wait for it or cut it. In
strict mode only the typed routes are proxied (strict/routes.py); any other path is 404 and nothing
is forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from onwards import __version__, errors
from onwards.access_log import LOGGER as ACCESS_LOGGER
from onwards.access_log import AccessLog
from onwards.config import ConfigError, load_config_file
from onwards.config.last_good import load_last_good
from onwards.config.model import Snapshot
from onwards.config.sources.base import ConfigFollower
from onwards.edge.drain import Drain, end_cut_response
from onwards.edge.front import answer_preflight, check_path, is_preflight, with_cors
from onwards.gateway import Gateway
from onwards.gc_tuning import tune_for_serving
from onwards.limits import build_limiter
from onwards.logging_setup import configure_logging
from onwards.metrics import build_metrics
from onwards.proxy.auth import bearer_token, visible_models
from onwards.proxy.client import build_session
from onwards.proxy.handler import ProxyHandler
from onwards.responses.store import RedisResponseStore
from onwards.settings import Settings
from onwards.strict.routes import STRICT_ROUTES
from onwards.trace import build_tracing

log = logging.getLogger("onwards.app")


async def _load_source(settings: Settings) -> Snapshot:
    if settings.config_from_redis:
        from onwards.config.sources.redis import load_from_redis

        assert settings.redis_url is not None
        return await load_from_redis(settings.redis_url, settings.redis_prefix)
    assert settings.targets is not None
    return load_config_file(settings.targets)


async def _load_initial(settings: Settings) -> Snapshot:
    try:
        return await _load_source(settings)
    except ConfigError as exc:
        kept = load_last_good(settings.last_good_path) if settings.last_good_path else None
        if kept is None:
            raise
        # The source broke (or Redis went away) after the gateway started. This worker starts on
        # the config its siblings serve; its follower refuses the broken source (logged and
        # counted once, with the field) or waits for Redis, and takes the fix when it comes.
        log.warning(
            "config source cannot be loaded at worker start; serving the last good config %s",
            kept.version,
            extra={"origin": kept.origin, "reason_type": type(exc).__name__},
        )
        return kept


def _follower(settings: Settings, version: str) -> ConfigFollower | None:
    if settings.config_from_redis:
        from onwards.config.sources.redis import RedisFollower

        assert settings.redis_url is not None
        return RedisFollower(settings.redis_url, settings.redis_prefix, version)
    if settings.targets:
        from onwards.config.sources.file import FileFollower

        # Without --watch the follower still answers SIGHUP: an operator can reload on demand.
        return FileFollower(settings.targets, version, watch=settings.watch)
    return None


def create_app(settings: Settings | None = None) -> OnwardsApp:
    """The application factory Granian calls in each worker."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    gateway = Gateway(settings, build_metrics(settings.metrics, settings.metrics_prefix))
    if settings.access_log and logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO):
        gateway.access_log = AccessLog(settings.log_format)
        gateway.access_log.flush_at_exit()
    drain = gateway.drain = Drain(
        settings.drain_secs, settings.shutdown_timeout_secs, settings.port, settings.run_dir
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        snapshot = await _load_initial(settings)
        limiter = build_limiter(
            settings.redis_url,
            settings.redis_prefix,
            snapshot.limits,
            on_state_change=gateway.metrics.limiter_state,
            on_error=gateway.metrics.limiter_error,
            on_problem=gateway.metrics.limiter_problem,
            on_deferred=gateway.metrics.limiter_release_deferred,
        )
        await limiter.start(snapshot.limits)
        gateway.limiter = limiter
        gateway.session = build_session(gateway.http_pool(snapshot))
        redis_responses = None
        if settings.redis_url:
            redis_responses = RedisResponseStore.from_url(
                settings.redis_url, settings.redis_prefix, settings.responses_ttl_secs
            )
            gateway.responses_store = redis_responses
        gateway.tracing = build_tracing()
        gateway.apply(snapshot)
        log.info(
            "worker ready",
            extra={"origin": snapshot.origin, "version": snapshot.version, "limiter": limiter.description},
        )
        if settings.gc_tuning:
            # Last, so everything loaded for serving is frozen with the rest.
            tune_for_serving()
        follower = _follower(settings, snapshot.version)
        follow_task = None
        loop = asyncio.get_running_loop()
        if follower is not None:
            follow_task = loop.create_task(follower.run(gateway.apply, gateway.refuse))
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, follower.trigger)
        drain.install(loop)
        gateway.body_watch.start()
        try:
            yield
        finally:
            await gateway.body_watch.stop()
            cut = await drain.finish()
            if cut:
                gateway.metrics.requests_cut(cut)
            if follow_task is not None:
                follow_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await follow_task
            try:
                await gateway.drain_background()
                if gateway.tracing is not None:
                    await asyncio.to_thread(gateway.tracing.shutdown)
                await gateway.session.close()
                await limiter.close()
                if redis_responses is not None:
                    await redis_responses.close()
            finally:
                # Last, so the lines of requests that ended during the shutdown are in it too.
                if gateway.access_log is not None:
                    gateway.access_log.flush()

    async def health(_: Request) -> Response:
        active = gateway.active
        return JSONResponse(
            {
                "status": "healthy",
                "version": __version__,
                "uptime_seconds": round(time.time() - gateway.started_at, 3),
                "config_version": active.snapshot.version if active else None,
            }
        )

    async def ready(_: Request) -> Response:
        if drain.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not gateway.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        limiter = gateway.limiter
        assert gateway.active is not None
        policy = gateway.active.snapshot.limits.on_redis_error
        # With policy allow a failing Redis still serves (unlimited), so the replica stays in
        # rotation; with deny it would only answer 503s, so it reports not ready.
        if not limiter.healthy and policy == "deny":
            return JSONResponse(
                {
                    "status": "limiter_unavailable",
                    "limiter": limiter.description,
                    "limiter_problem": limiter.problem,
                },
                status_code=503,
            )
        return JSONResponse(
            {
                "status": "ready",
                "limiter": limiter.description,
                "limiter_healthy": limiter.healthy,
                # A Redis that says the URL or credentials are wrong (one line), else null.
                "limiter_problem": limiter.problem,
                "config_version": gateway.active.snapshot.version,
            }
        )

    def caller_token(request: Request) -> str | None:
        return bearer_token(request.headers.get("authorization", "").encode("latin-1") or None)

    async def models(request: Request) -> Response:
        assert gateway.active is not None
        now = int(time.time())
        data = [
            model_entry(alias, now)
            for alias in visible_models(gateway.active.snapshot, caller_token(request))
        ]
        return JSONResponse({"object": "list", "data": data})

    async def one_model(request: Request) -> Response:
        # As the list: an alias the caller's key may not use does not exist for that caller.
        assert gateway.active is not None
        alias: str = request.path_params["model"]
        if alias not in visible_models(gateway.active.snapshot, caller_token(request)):
            return Response(errors.model_not_found(alias), status_code=404, media_type="application/json")
        return JSONResponse(model_entry(alias, int(time.time())))

    async def not_found(_: Request) -> Response:
        return Response(errors.NOT_FOUND, status_code=404, media_type="application/json")

    starlette = Starlette(
        routes=[
            get_only("/health", health),
            get_only("/ready", ready),
            get_only("/v1/models", models),
            get_only("/models", models),
            get_only("/v1/models/{model:path}", one_model),
            Route("/{path:path}", not_found, methods=list(_ALL_METHODS)),
        ],
        lifespan=lifespan,
    )
    return OnwardsApp(starlette, ProxyHandler(gateway), gateway)


_ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def model_entry(alias: str, now: int) -> dict[str, Any]:
    # "None" is what the Rust gateway sends (its owner field printed unset); clients compare it.
    return {"id": alias, "object": "model", "created": now, "owned_by": "None"}


def get_only(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    """A GET route that answers any other method with 405 and a JSON error body."""

    async def guarded(request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return await endpoint(request)
        return Response(
            errors.METHOD_NOT_ALLOWED,
            status_code=405,
            media_type="application/json",
            headers={"allow": "GET"},
        )

    return Route(path, guarded, methods=list(_ALL_METHODS))


def is_own_path(path: str) -> bool:
    """Paths the gateway answers itself, whatever the method; every other path is proxied."""
    return path in _OWN_PATHS or path.startswith("/v1/models/")


_OWN_PATHS = frozenset({"/", "/health", "/ready", "/models", "/v1/models"})


class OnwardsApp:
    def __init__(self, starlette: Starlette, proxy: ProxyHandler, gateway: Gateway) -> None:
        self.starlette = starlette
        self.proxy = proxy
        self.gateway = gateway
        self.in_flight = gateway.drain.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            gateway = self.gateway
            if not await check_path(scope, send, gateway.metrics):
                return
            active = gateway.active
            cors = active.snapshot.cors if active is not None else None
            if scope["method"] == "OPTIONS" and is_preflight(scope):
                await answer_preflight(scope, send, cors, gateway.metrics)
                return
            if cors is not None:
                send = with_cors(scope, send, cors)
            path: str = scope["path"]
            if self.gateway.strict_mode:
                # The typed router: only its routes reach the proxy; nothing else is forwarded.
                route = STRICT_ROUTES.get(path)
                if route is not None:
                    if scope["method"] != "POST":
                        await send_json(send, 405, errors.METHOD_NOT_ALLOWED, ((b"allow", b"POST"),))
                        return
                    scope["onwards.strict"] = route
                    await self._proxy(scope, receive, send)
                    return
                if not is_own_path(path):
                    await send_json(send, 404, errors.NOT_FOUND)
                    return
            elif not is_own_path(path):
                await self._proxy(scope, receive, send)
                return
        await self.starlette(scope, receive, send)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Tracked so a drain can wait for it, and cut it past the shutdown timeout.
        task = asyncio.current_task()
        assert task is not None
        in_flight = self.in_flight
        in_flight.add(task)
        try:
            await self.proxy(scope, receive, send)
        except asyncio.CancelledError:
            if not self.gateway.drain.cutting:
                raise
            # Cut at shutdown: the handler logged and released; the response must still end.
            await end_cut_response(send)
        finally:
            in_flight.discard(task)


async def send_json(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
