"""The worker's pooled upstream HTTP client (aiohttp).

aiohttp, not httpx, on the data path: httpx 0.28's pool does work proportional to its size
on every request; at 64 concurrent requests it measured 0.05-0.15x of aiohttp's throughput
on this project's machines (docs/performance.md).
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from onwards.config.model import HttpPool


class IdleCappedConnector(aiohttp.TCPConnector):
    """A connector that keeps at most `max_idle_per_host` idle connections per upstream host.

    aiohttp only knows a cap on *all* connections, which would queue requests beyond it; a
    gateway must never queue, so active connections are unbounded and only the idle pool is
    trimmed, as `--pool-max-idle-per-host` promises.
    """

    def __init__(self, *, max_idle_per_host: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._max_idle_per_host = max_idle_per_host
        self._live_hosts: frozenset[tuple[str, int, bool]] | None = None

    def _release(self, key, protocol, *, should_close: bool = False) -> None:
        idle = self._conns.get(key)
        if idle is not None and len(idle) >= self._max_idle_per_host:
            should_close = True
        live = self._live_hosts
        if live is not None and (key.host, key.port, key.is_ssl) not in live:
            # The provider left the config: its connection closes when its last request ends.
            should_close = True
        super()._release(key, protocol, should_close=should_close)

    def keep_only(self, provider_urls: set[str]) -> None:
        """After a reload: close idle connections to hosts no provider uses any more."""
        live = set()
        for raw in provider_urls:
            url = URL(raw)
            if url.host is not None and url.port is not None:
                live.add((url.host, url.port, url.scheme == "https"))
        self._live_hosts = frozenset(live)
        for key in list(self._conns):
            if (key.host, key.port, key.is_ssl) not in live:
                for protocol, _ in self._conns.pop(key):
                    protocol.close()


def build_session(pool: HttpPool) -> aiohttp.ClientSession:
    connector = IdleCappedConnector(
        max_idle_per_host=pool.max_idle_per_host,
        limit=0,  # unbounded: the limiter, not the pool, decides how many requests run
        limit_per_host=0,
        keepalive_timeout=pool.idle_timeout_secs,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # Bodies pass through byte-for-byte, compressed or not.
        auto_decompress=False,
        # Per-provider request_timeout_secs is applied by the forwarder to response headers only;
        # a long stream must not be cut by a total timeout.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )
