"""One worker's state: the active config, the limiter, the upstream client and the metrics.

Nothing here is shared between workers; everything that must be shared lives in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp

from onwards.access_log import AccessLog
from onwards.config.last_good import write_last_good
from onwards.config.model import HttpPool, Snapshot
from onwards.edge.drain import Drain
from onwards.edge.slow import BodyWatch
from onwards.limits.base import Limiter
from onwards.metrics import Metrics
from onwards.proxy.client import IdleCappedConnector
from onwards.proxy.plan import ActiveConfig, compile_config
from onwards.responses.store import MemoryResponseStore, ResponseStore
from onwards.settings import Settings
from onwards.trace import Tracing

log = logging.getLogger("onwards.gateway")


class Gateway:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        # Set by the app when the access log is on (and not dropped by --log-level).
        self.access_log: AccessLog | None = None
        self.started_at = time.time()
        self.active: ActiveConfig | None = None
        self.limiter: Limiter = None  # type: ignore[assignment]
        self.session: aiohttp.ClientSession = None  # type: ignore[assignment]
        # For previous_response_id; the lifespan puts it in Redis when the gateway has Redis.
        self.responses_store: ResponseStore = MemoryResponseStore(settings.responses_ttl_secs)
        self._background: set[asyncio.Task[Any]] = set()
        # Which router this worker runs, fixed by the config it started with (as in Rust).
        self.strict_mode = False
        self.tracing: Tracing | None = None  # OTLP export, when configured (onwards/trace.py)
        # Attempts in flight per provider label in this worker, for least-connections selection.
        self.provider_in_flight: dict[str, int] = {}
        self.drain = Drain(0, 0, settings.port, None)  # the app sets the configured one
        self.body_watch = BodyWatch(settings.body_timeout_secs)

    @property
    def ready(self) -> bool:
        return self.active is not None and self.session is not None and self.limiter is not None

    def http_pool(self, snapshot: Snapshot) -> HttpPool:
        """Command-line pool flags win over the config file's http_pool."""
        pool = snapshot.http_pool
        s = self.settings
        return HttpPool(
            max_idle_per_host=s.pool_max_idle_per_host
            if s.pool_max_idle_per_host is not None
            else pool.max_idle_per_host,
            idle_timeout_secs=s.pool_idle_timeout_secs
            if s.pool_idle_timeout_secs is not None
            else pool.idle_timeout_secs,
        )

    def apply(self, snapshot: Snapshot) -> None:
        """Make `snapshot` the config for new requests; requests in flight keep theirs."""
        previous = self.active
        compiled = compile_config(snapshot)
        if previous is not None and self.limiter is not None:
            self.limiter.configure(snapshot.limits)
            if self.http_pool(previous.snapshot) != self.http_pool(snapshot):
                log.warning("http_pool changed in %s: pool settings apply after a restart", snapshot.origin)
            if snapshot.strict_mode != self.strict_mode:
                log.warning(
                    "strict_mode changed to %s in %s: the router changes after a restart; "
                    "this worker keeps serving with strict_mode %s",
                    str(snapshot.strict_mode).lower(),
                    snapshot.origin,
                    str(self.strict_mode).lower(),
                )
        else:
            self.strict_mode = snapshot.strict_mode
        self.active = compiled
        if self.settings.last_good_path:
            write_last_good(self.settings.last_good_path, snapshot)
        self._retire_unused_hosts(compiled)
        self.metrics.config_version(snapshot.version)
        if previous is not None:
            self.metrics.config_reload("ok")
            log.info(
                "config reloaded",
                extra={
                    "origin": snapshot.origin,
                    "version": snapshot.version,
                    "targets": len(snapshot.targets),
                },
            )

    def refuse(self, message: str) -> None:
        self.metrics.config_reload("error")
        log.error("config refused, the previous config keeps serving: %s", message)

    def _retire_unused_hosts(self, compiled: ActiveConfig) -> None:
        if self.session is None:
            return
        connector = self.session.connector
        if isinstance(connector, IdleCappedConnector):
            connector.keep_only({p.url for t in compiled.targets.values() for p in t.providers})

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the background, keeping a reference so it is not collected mid-flight."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain_background(self, timeout: float = 2.0) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)
