"""Redis URLs: the one parser and the one redaction every part of Onwards uses.

Forms (credentials, port and db are optional; ``rediss`` means TLS):

    redis://[user:password@]host:port[/db]                     one server
    unix://[user:password@]/path/to/redis.sock[?db=N]          one server on a socket
    redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[user:password@]host:port[,host:port...]   a Redis Cluster (db 0 only)

The credentials are those of the Redis data nodes; Sentinels are asked without them unless
``?sentinel_password=...`` (and ``sentinel_username``) is given. A URL the limiter cannot use is
refused here with one line naming the problem (``RedisURLError``), never later with a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote

Topology = Literal["single", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
SCHEMES_TEXT = (
    "redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster://"
)
_DEFAULT_PORT = {"single": 6379, "sentinel": 26379, "cluster": 6379}
_SECRET_PARAMS = re.compile(r"((?:^|[?&])(?:sentinel_)?password=)[^&]*", re.IGNORECASE)
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:(?P<userinfo>[^@/?#]*)@)?(?P<rest>.*)$", re.S)


class RedisURLError(ValueError):
    """A Redis URL the gateway cannot use; the message is one line, without the password."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed Redis URL: where the data lives and how to log in."""

    topology: Topology
    nodes: tuple[tuple[str, int], ...]  # the server, the Sentinels, or the cluster seeds
    tls: bool = False
    path: str | None = None  # unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    service: str | None = None  # Sentinel: the monitored master's name
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    redacted: str = ""

    def with_topology(self, topology: Topology) -> RedisTarget:
        """The same servers seen as another topology (a redis:// URL that is a cluster node)."""
        return RedisTarget(
            topology,
            self.nodes,
            self.tls,
            self.path,
            self.db,
            self.username,
            self.password,
            self.service,
            self.sentinel_username,
            self.sentinel_password,
            self.redacted,
        )


def redact_url(url: str) -> str:
    """The URL with its passwords replaced by ``***``, fit for messages, logs and /ready."""
    match = _URL.match(url.strip())
    if match is None:
        return "<unparseable Redis URL>"
    userinfo = match["userinfo"]
    if userinfo is None:
        auth = ""
    elif ":" in userinfo:
        auth = f"{userinfo.split(':', 1)[0]}:***@"
    else:
        auth = f"{userinfo}@"
    rest = _SECRET_PARAMS.sub(r"\1***", match["rest"])
    return f"{match['scheme']}://{auth}{rest}"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse any supported Redis URL; RedisURLError names what is wrong."""
    shown = redact_url(url)
    match = _URL.match(url.strip())
    if match is None:
        raise RedisURLError(f"not a Redis URL: {shown!r} (expected {SCHEMES_TEXT})")
    scheme = match["scheme"].lower()
    if scheme not in _SCHEMES:
        raise RedisURLError(
            f"unsupported Redis URL scheme {match['scheme']!r} in {shown} (use {SCHEMES_TEXT})"
        )
    topology, tls = _SCHEMES[scheme]
    rest = match["rest"]
    rest = rest.partition("#")[0]
    rest, _, query_text = rest.partition("?")
    query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
    username, password = _credentials(match["userinfo"])
    if "password" in query:
        password = query["password"]
    common = {
        "tls": tls,
        "username": username,
        "password": password,
        "sentinel_username": query.get("sentinel_username") or None,
        "sentinel_password": query.get("sentinel_password") or None,
        "redacted": shown,
    }
    if scheme == "unix":
        if not rest.startswith("/"):
            raise RedisURLError(f"a unix:// Redis URL needs an absolute socket path, got {shown}")
        return RedisTarget("single", (), path=rest, db=_db(query.get("db"), shown), **common)  # type: ignore[arg-type]
    netloc, slash, path = rest.partition("/")
    nodes = _nodes(netloc, _DEFAULT_PORT[topology], shown, many=topology != "single")
    segments = [unquote(s) for s in path.split("/") if s] if slash else []
    if topology == "sentinel":
        if not segments:
            raise RedisURLError(
                f"a Sentinel URL needs the master's service name: {shown} (…/service_name[/db])"
            )
        if len(segments) > 2:
            raise RedisURLError(f"a Sentinel URL's path is /service_name[/db], got {shown}")
        db = _db(segments[1] if len(segments) == 2 else query.get("db"), shown)
        return RedisTarget("sentinel", nodes, service=segments[0], db=db, **common)  # type: ignore[arg-type]
    if len(segments) > 1:
        raise RedisURLError(f"a Redis URL's path is only the db number, got {shown}")
    db = _db(segments[0] if segments else query.get("db"), shown)
    if topology == "cluster" and db != 0:
        raise RedisURLError(f"Redis Cluster has only db 0, but {shown} asks for db {db}")
    return RedisTarget(topology, nodes, db=db, **common)  # type: ignore[arg-type]


def _credentials(userinfo: str | None) -> tuple[str | None, str | None]:
    if userinfo is None:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _db(text: str | None, shown: str) -> int:
    if text is None or text == "":
        return 0
    if not text.isdigit():
        raise RedisURLError(f"the db in a Redis URL must be a number, got {text!r} in {shown}")
    return int(text)


def _nodes(netloc: str, default_port: int, shown: str, *, many: bool) -> tuple[tuple[str, int], ...]:
    parts = netloc.split(",")
    if len(parts) > 1 and not many:
        raise RedisURLError(f"a node list needs redis+sentinel:// or redis+cluster://, got {shown}")
    nodes = []
    for part in parts:
        if not part:
            if len(parts) == 1:
                return (("127.0.0.1", default_port),)
            raise RedisURLError(f"empty entry in the node list of {shown}")
        nodes.append(_node(part, default_port, shown))
    return tuple(nodes)


def _node(text: str, default_port: int, shown: str) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise RedisURLError(f"malformed IPv6 address {text!r} in {shown}")
        port_text = tail[1:] if tail else ""
    else:
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            raise RedisURLError(f"malformed host {text!r} in {shown} (write IPv6 addresses in [brackets])")
    if not host:
        raise RedisURLError(f"missing host in {text!r} of {shown}")
    if port_text == "":
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RedisURLError(f"bad port {port_text!r} in {shown}")
    return host, int(port_text)
