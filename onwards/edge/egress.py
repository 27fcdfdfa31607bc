"""Egress proxy: which proxy, if any, each provider's connections go through. Decided at config load.

Rule: a provider's own `proxy` wins (a URL, or `false` for a direct connection); without one,
HTTPS_PROXY (https providers) or HTTP_PROXY (http providers) applies unless NO_PROXY matches the
provider's host. Lower-case variables win over upper-case ones, as in curl and Python's urllib.
NO_PROXY holds comma-separated entries: `*` (everything), a host or domain (`example.com` also
matches `api.example.com`; a leading `.` or `*.` means the same), an optional `:port`, an IP
address or a CIDR block. The answer is a URL per provider, compiled into its plan, so the request
path pays nothing for proxies it does not use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

ProxySetting = str | Literal[False] | None  # a URL; False: direct; None: from the environment


def _env(environ: Mapping[str, str], name: str) -> str:
    return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()


def check_proxy_url(url: str) -> str | None:
    """Why `url` cannot be used as a proxy, or None when it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "must be an http:// proxy URL with a valid host and port"
    if parts.scheme.lower() != "http" or not parts.hostname:
        # aiohttp speaks to proxies in plain HTTP (CONNECT for https upstreams).
        return "must be an http:// proxy URL (https upstreams go through it with CONNECT)"
    return None


@dataclass(frozen=True, slots=True)
class _NoProxyEntry:
    host: str  # lower-cased, without leading dots; "" for a network entry
    port: int | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host == self.host or host.endswith("." + self.host)


def _parse_no_proxy(raw: str) -> tuple[bool, tuple[_NoProxyEntry, ...]]:
    entries: list[_NoProxyEntry] = []
    for item in raw.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item == "*":
            return True, ()
        try:
            entries.append(_NoProxyEntry("", None, ipaddress.ip_network(item.strip("[]"), strict=False)))
            continue
        except ValueError:
            pass
        port: int | None = None
        host = item
        if host.startswith("["):  # [::1]:8080
            end = host.find("]")
            rest = host[end + 1 :]
            host = host[1:end]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif host.count(":") == 1:
            name, _, maybe_port = host.partition(":")
            if maybe_port.isdigit():
                host, port = name, int(maybe_port)
        try:
            entries.append(_NoProxyEntry("", port, ipaddress.ip_network(host, strict=False)))
            continue
        except ValueError:
            pass
        host = host.lstrip("*").lstrip(".")
        if host:
            entries.append(_NoProxyEntry(host, port, None))
    return False, tuple(entries)


@dataclass(frozen=True, slots=True)
class EgressEnv:
    """The proxy variables of one process, read once."""

    http: str
    https: str
    bypass_all: bool
    no_proxy: tuple[_NoProxyEntry, ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EgressEnv:
        bypass_all, entries = _parse_no_proxy(_env(environ, "NO_PROXY"))
        return cls(_env(environ, "HTTP_PROXY"), _env(environ, "HTTPS_PROXY"), bypass_all, entries)

    def bypassed(self, host: str, port: int) -> bool:
        if self.bypass_all:
            return True
        host = host.lower().strip("[]")
        return any(entry.matches(host, port) for entry in self.no_proxy)

    def proxy_for(self, upstream_url: str, setting: ProxySetting = None) -> str | None:
        """The proxy URL for connections to `upstream_url`, or None to connect directly."""
        if setting is False:
            return None
        if isinstance(setting, str):
            return setting
        parts = urlsplit(upstream_url)
        https = parts.scheme.lower() == "https"
        chosen = self.https if https else self.http
        if not chosen or parts.hostname is None:
            return None
        if self.bypassed(parts.hostname, parts.port or (443 if https else 80)):
            return None
        if check_proxy_url(chosen) is not None:
            return None  # an unusable variable is reported once at start (cli), never used
        return chosen
