"""Config stored in Redis: push once, every worker of every replica follows.

Layout, for a prefix P (default "onwards"):

* `P:{P}:config` is a hash: `version` (an integer, incremented by every push, so it only
  grows), `body` (the raw JSON bytes, exactly as pushed), `digest` (the body's content
  fingerprint, as for a file), `pushed_at` (Redis server time, unix seconds) and `source`
  (the file name the push came from, for `onwards config show`).
* After storing, the push PUBLISHes the new version number on `P:{P}:config:notify`.

A stored config's version is "v<N>-<digest>", e.g. "v7-3f2a9c01b4de". The counter orders
pushes for people; the digest keeps two different configs from ever sharing a version,
even when a Redis that lost its data (no persistence, a new instance) starts counting at
v1 again while the workers still serve an old v1.

Both steps run in one Lua script, so a reader never sees a version without its body and
a notice never announces a version that is not stored yet. The `{P}` hash tag puts the
key in the same Cluster slot as the limiter keys of the same prefix.

A follower subscribes to the channel and, on any notice, reads the stored version; if it
differs from the one it serves, it reads the body, validates it with the same parser as a
file and applies or refuses it. Notices can be lost (a dropped connection, a Redis
restart), so the stored version is also read right after every (re)subscription and every
DEFAULT_RECHECK_SECS; a lost notice therefore delays a reload, it never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential, wait_random

from onwards.config.errors import ConfigError
from onwards.config.model import Snapshot
from onwards.config.parse import content_version, parse_config_bytes
from onwards.config.sources.base import (
    DEFAULT_RECHECK_SECS,
    Apply,
    ConfigFollower,
    Refuse,
    VersionGate,
    Wakeup,
    raise_if_cancelling,
    report_refusal,
    stop_task,
    try_parse,
)
from onwards.limits.keys import DEFAULT_PREFIX, check_key_part, config_key
from onwards.limits.redis.url import RedisURLError, parse_redis_url, redact_url

log = logging.getLogger("onwards.config")

__all__ = ["DEFAULT_PREFIX", "config_key", "redact_url"]  # re-exported: one home each, in onwards.limits

FOLLOWER_CLIENT_NAME = "onwards-config-follower"
CONNECT_TIMEOUT_SECS = 5.0
# Reconnect backoff after a lost subscription: quick first tries, at most this long apart.
RECONNECT_MAX_SECS = 3.0
# An idle subscription is PINGed this often; no answer within PONG_TIMEOUT_SECS means the
# connection is dead even though no error surfaced (a peer that vanished without a reset).
PING_IDLE_SECS = 15.0
PONG_TIMEOUT_SECS = 5.0

# KEYS[1] = config hash; ARGV = body, digest, source, notify channel.
# TIME is read inside the script so pushed_at is the server's clock, not the pusher's.
_PUSH_SCRIPT = """
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'digest', ARGV[2], 'source', ARGV[3], 'pushed_at', now[1])
local receivers = redis.call('PUBLISH', ARGV[4], version)
return {version, receivers}
"""


def check_prefix(prefix: str) -> None:
    """Refuse a prefix that would break the key layout (the rule of onwards.limits.keys)."""
    try:
        check_key_part("prefix", prefix)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def notify_channel(prefix: str) -> str:
    return f"{config_key(prefix)}:notify"


def version_label(number: int | bytes | str, digest: bytes | str) -> str:
    """The Snapshot version of a stored config: (7, "3f2a9c01b4de") -> "v7-3f2a9c01b4de".

    Raises ValueError when the stored number is not an integer."""
    if isinstance(number, bytes):
        number = number.decode()
    if isinstance(digest, bytes):
        digest = digest.decode(errors="replace")
    return f"v{int(number)}-{digest}"


def connect_redis(redis_url: str, *, client_name: str | None = None, cluster_seed: bool = False) -> Any:
    """A client for config traffic, with redis-py's own retries switched off.

    redis-py would otherwise reconnect a dropped pub/sub connection and resubscribe by
    itself, silently; the follower must see the drop to re-read the stored version, and
    does its own retrying with backoff. Tests replace this function to use fakeredis.
    The URL is read by the same parser as the limiter's (RedisURLError when unusable), and
    every form the limiter takes works here: a Sentinel client follows failovers, a cluster
    client the slot map (`cluster_seed` reads a redis:// URL as one cluster seed).
    """
    target = parse_redis_url(redis_url)
    if cluster_seed:
        target = target.with_topology("cluster")
    options: dict[str, Any] = {
        "client_name": client_name,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECS,
        "socket_timeout": CONNECT_TIMEOUT_SECS,
        "username": target.username,
        "password": target.password,
    }
    if target.topology == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return RedisCluster(startup_nodes=nodes, ssl=target.tls, **options)
    options["retry"] = Retry(NoBackoff(), 0)
    if target.topology == "sentinel":
        sentinel_options = {
            "socket_connect_timeout": CONNECT_TIMEOUT_SECS,
            "socket_timeout": CONNECT_TIMEOUT_SECS,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            "ssl": target.tls,
        }
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_options, ssl=target.tls)
        assert target.service is not None
        return sentinel.master_for(target.service, db=target.db, **options)
    options["db"] = target.db
    if target.path is not None:
        return aioredis.Redis(unix_socket_path=target.path, **options)
    host, port = target.nodes[0]
    return aioredis.Redis(host=host, port=port, ssl=target.tls, socket_keepalive=True, **options)


async def open_redis(redis_url: str, *, client_name: str | None = None) -> Any:
    """connect_redis, except that a redis:// URL naming a cluster node is used as a cluster seed
    (and logged so), as the limiter does."""
    client = connect_redis(redis_url, client_name=client_name)
    if isinstance(client, RedisCluster):
        # The slot map first: its pub/sub looks the channel's node up in it.
        await _initialized(client)
        return client
    if parse_redis_url(redis_url).topology != "single":
        return client
    try:
        mode = (await client.info("server")).get("redis_mode")
    except ResponseError:  # INFO refused (renamed, or a test double): not a cluster seed then
        return client
    except BaseException:
        await _close(client)
        raise
    if mode != "cluster":
        return client
    await _close(client)
    log.warning("%s is a Redis Cluster node; using it as a cluster seed", redact_url(redis_url))
    cluster = connect_redis(redis_url, client_name=client_name, cluster_seed=True)
    await _initialized(cluster)
    return cluster


async def _initialized(client: RedisCluster) -> RedisCluster:
    try:
        await client.initialize()
    except BaseException:
        await _close(client)
        raise
    return client


async def _cli_client(redis_url: str) -> Any:
    try:
        return await open_redis(redis_url)
    except RedisURLError as error:
        raise ConfigError(f"invalid Redis URL {redact_url(redis_url)}: {error}") from None


def _unreachable(redis_url: str, error: Exception) -> ConfigError:
    detail = " ".join(str(error).split()) or type(error).__name__
    return ConfigError(f"cannot reach Redis at {redact_url(redis_url)}: {detail}")


class NothingStored(ConfigError):
    """No config under the key (never pushed, or Redis lost its data)."""


@dataclass(frozen=True, slots=True)
class StoredConfig:
    version: str  # "v<N>-<digest>"
    number: int
    body: bytes
    digest: str
    pushed_at: int | None
    source: str


@dataclass(frozen=True, slots=True)
class PushResult:
    version: str
    key: str
    receivers: int  # subscribers the notice reached (on the node that took the push)


async def push_config(redis_url: str, prefix: str, body: bytes, source: str) -> PushResult:
    """Store an already validated config body and announce it. Raises ConfigError when
    Redis cannot be reached or refuses the write."""
    check_prefix(prefix)
    key = config_key(prefix)
    try:
        client = await _cli_client(redis_url)
    except (RedisError, OSError) as error:
        raise _unreachable(redis_url, error) from None
    try:
        version, receivers = await client.eval(
            _PUSH_SCRIPT, 1, key, body, content_version(body), source, notify_channel(prefix)
        )
    except ResponseError as error:
        # WRONGTYPE (someone else's data under our key), READONLY replica, NOSCRIPT...
        raise ConfigError(f"Redis refused to store the config under {key}: {error}") from None
    except (RedisError, OSError) as error:
        raise _unreachable(redis_url, error) from None
    finally:
        await _close(client)
    return PushResult(
        version=version_label(version, content_version(body)), key=key, receivers=int(receivers)
    )


async def read_stored(redis_url: str, prefix: str) -> StoredConfig:
    """The config stored under the prefix. Raises ConfigError when nothing is stored or
    Redis cannot be reached."""
    check_prefix(prefix)
    try:
        client = await _cli_client(redis_url)
    except (RedisError, OSError) as error:
        raise _unreachable(redis_url, error) from None
    try:
        return await _read_stored(client, prefix)
    except ConfigError:
        raise
    except (RedisError, OSError) as error:
        raise _unreachable(redis_url, error) from None
    finally:
        await _close(client)


async def load_from_redis(redis_url: str, prefix: str) -> Snapshot:
    """The validated Snapshot stored under the prefix (used at worker start).

    Raises ConfigError when nothing is stored, Redis cannot be reached, or the stored body
    is invalid (with the same message a file would get, the key as origin)."""
    stored = await read_stored(redis_url, prefix)
    return parse_config_bytes(stored.body, config_key(prefix), stored.version)


async def _read_stored(client: aioredis.Redis, prefix: str) -> StoredConfig:
    key = config_key(prefix)
    try:
        # The client is opened without decode_responses: every field is bytes or None.
        fields: list[bytes | None] = await client.hmget(  # type: ignore[assignment]
            key, ["version", "body", "digest", "pushed_at", "source"]
        )
        version, body, digest, pushed_at, source = fields
    except ResponseError as error:
        raise ConfigError(f"cannot read the config stored under {key}: {error}") from None
    if version is None or body is None:
        raise NothingStored(
            f"no config stored under {key} (store one with `onwards config push -f config.json`)"
        )
    # A body stored by hand, without a digest, still gets a version that follows its content.
    digest_text = digest.decode(errors="replace") if digest else content_version(body)
    try:
        label = version_label(version, digest_text)
    except ValueError:
        raise ConfigError(f"the config stored under {key} has a version that is not a number") from None
    return StoredConfig(
        version=label,
        number=int(version),
        body=body,
        digest=digest_text,
        pushed_at=int(pushed_at) if pushed_at and pushed_at.isdigit() else None,
        source=source.decode(errors="replace") if source else "",
    )


async def _close(client: aioredis.Redis | RedisCluster) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()


class _SessionLost(Exception):
    """A subscription that had been working broke; reconnecting starts from a short wait."""


def _worth_retrying(error: BaseException) -> bool:
    # Exception only: CancelledError must end the follower, not be retried. A lost
    # session is not retried by the current backoff either: it restarts a fresh one.
    return isinstance(error, Exception) and not isinstance(error, _SessionLost)


class RedisFollower(ConfigFollower):
    """A ConfigFollower for the config stored in Redis under one prefix."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        current_version: str,
        *,
        recheck_secs: float = DEFAULT_RECHECK_SECS,
        reconnect_max_secs: float = RECONNECT_MAX_SECS,
        ping_idle_secs: float = PING_IDLE_SECS,
        pong_timeout_secs: float = PONG_TIMEOUT_SECS,
    ) -> None:
        self._url = redis_url
        self._prefix = prefix
        self._key = config_key(prefix)
        self._channel = notify_channel(prefix)
        self._recheck_secs = recheck_secs
        self._reconnect_max_secs = reconnect_max_secs
        self._ping_idle_secs = ping_idle_secs
        self._pong_timeout_secs = pong_timeout_secs
        self._gate = VersionGate(current_version)
        self._wakeup = Wakeup()
        self._missing_logged = False
        self._stored_problem: str | None = None
        # Named so an operator (or a test) can find these connections in CLIENT LIST.
        self.client_name = f"{FOLLOWER_CLIENT_NAME}:{_name_safe(prefix)}"

    @property
    def current_version(self) -> str:
        return self._gate.current

    def trigger(self) -> None:
        self._wakeup.set()

    async def run(self, apply: Apply, refuse: Refuse) -> None:
        self._wakeup.bind()
        while True:
            raise_if_cancelling()
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_worth_retrying),
                    # 0.2, 0.4, 0.8 ... s up to the cap, plus jitter so workers do not reconnect in step.
                    wait=wait_exponential(multiplier=0.2, max=self._reconnect_max_secs) + wait_random(0, 0.2),
                    before_sleep=self._log_retry,
                    reraise=True,
                ):
                    with attempt:
                        await self._session(apply, refuse)
            except _SessionLost as lost:
                cause = lost.__cause__ or lost
                log.warning("config subscription on %s lost (%s); resubscribing", self._channel, cause)

    def _log_retry(self, state) -> None:  # tenacity RetryCallState
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        # One warning per outage, not one every few seconds while Redis is down.
        level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
        log.log(
            level,
            "cannot follow config at %s on %s (%s); retrying in %.1f s, serving version %s meanwhile",
            self._key,
            redact_url(self._url),
            error,
            wait,
            self._gate.current,
        )

    async def _session(self, apply: Apply, refuse: Refuse) -> None:
        """Subscribe, catch up, then follow until the connection breaks (never returns)."""
        client = await open_redis(self._url, client_name=self.client_name)
        pubsub = client.pubsub()
        listener: asyncio.Task[None] | None = None
        try:
            await pubsub.subscribe(self._channel)
            # Subscribed first, read second: a push landing in between is both announced
            # and visible to this read, so nothing falls in the gap.
            await self._check(client, apply, refuse)
            raise_if_cancelling()
            log.info("following config at %s (serving version %s)", self._key, self._gate.current)
            listener = asyncio.create_task(self._listen(pubsub))
            while True:
                raise_if_cancelling()
                woken = asyncio.create_task(self._wakeup.wait(self._recheck_secs))
                try:
                    done, _ = await asyncio.wait({listener, woken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                if listener in done:
                    error = listener.exception()
                    raise _SessionLost("subscription ended") from error
                self._wakeup.clear()
                try:
                    await self._check(client, apply, refuse)
                except (RedisError, OSError) as error:
                    raise _SessionLost("reading the stored config failed") from error
        finally:
            if listener is not None:
                await stop_task(listener)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await _close(client)

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        """Wake the follower for every notice; raise when the connection is gone."""
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        ping_sent: float | None = None
        while True:
            if ping_sent is None:
                timeout = max(0.0, last_heard + self._ping_idle_secs - loop.time())
            else:
                timeout = max(0.0, ping_sent + self._pong_timeout_secs - loop.time())
            message = await pubsub.get_message(timeout=timeout)
            now = loop.time()
            if message is None:
                if ping_sent is None:
                    if now - last_heard >= self._ping_idle_secs:
                        await pubsub.ping()
                        ping_sent = now
                elif now - ping_sent >= self._pong_timeout_secs:
                    raise ConnectionError(f"no answer to PING within {self._pong_timeout_secs:g} s")
                continue
            last_heard = now
            ping_sent = None
            # A (re)subscribe confirmation is a wake-up too: whatever was published while
            # not subscribed is only visible in the stored version.
            if message["type"] in ("message", "subscribe"):
                self._wakeup.set()

    async def _check(self, client: aioredis.Redis, apply: Apply, refuse: Refuse) -> None:
        try:
            raw_version, digest = await client.hmget(self._key, ["version", "digest"])
        except ResponseError as error:
            self._refuse_stored(f"{self._key}: cannot read the stored config: {error}", refuse)
            return
        if raw_version is None:
            if not self._missing_logged:
                self._missing_logged = True
                log.warning(
                    "no config stored under %s; keeping version %s until one is pushed",
                    self._key,
                    self._gate.current,
                )
            return
        self._missing_logged = False
        try:
            version = version_label(raw_version, digest) if digest is not None else None
        except ValueError:
            self._refuse_stored(f"{self._key}: the stored version is not a number", refuse)
            return
        # The cheap read above decides most checks; the body is fetched only for a new version.
        if version is not None and not self._gate.is_new(version):
            self._stored_problem = None
            return
        try:
            stored = await _read_stored(client, self._prefix)
        except NothingStored:  # deleted between the two reads; the next check reports it
            return
        except ConfigError as error:  # a version field that is not a number
            self._refuse_stored(str(error), refuse)
            return
        self._stored_problem = None
        if not self._gate.is_new(stored.version):
            return
        result = try_parse(lambda: parse_config_bytes(stored.body, self._key, stored.version), self._key)
        self._gate.offer(stored.version, result, apply, refuse)

    def _refuse_stored(self, message: str, refuse: Refuse) -> None:
        # Data under the key that is not a config at all; reported once, not every re-check.
        if message != self._stored_problem:
            self._stored_problem = message
            report_refusal(message, self._gate.current, refuse)


def _name_safe(text: str) -> str:
    # CLIENT SETNAME refuses spaces and non-printable characters.
    return re.sub(r"[^!-~]", "_", text)
