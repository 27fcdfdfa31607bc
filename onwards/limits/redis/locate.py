"""Which Redis node holds this gateway's keys, for each topology, and the checks on meeting it.

* single: the one node of the URL. If it turns out to be a cluster node, it is used as a cluster
  seed (and logged so); if it is a Sentinel, that is a misconfiguration.
* sentinel: the Sentinels are asked in turn for the master of the service; the node must then say
  it is a master (during a failover a Sentinel may still name the old one).
* cluster: CLUSTER SLOTS on the seeds (or the node a MOVED named) gives the master owning the one
  hash slot all of this gateway's keys are in.

Every lookup runs on a short-lived connection of its own, only when the data connection is opened,
never on the request path.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from redis.exceptions import AuthenticationError, ResponseError

from onwards.limits.redis.errors import RedisMisconfigured
from onwards.limits.redis.url import RedisTarget

log = logging.getLogger("onwards.limits")

_CRC16_TABLE: list[int] = []
for _byte in range(256):
    _crc = _byte << 8
    for _ in range(8):
        _crc = ((_crc << 1) ^ 0x1021) if _crc & 0x8000 else (_crc << 1)
    _CRC16_TABLE.append(_crc & 0xFFFF)


def hash_slot(key: str) -> int:
    """Redis Cluster's slot of a key (CRC16/XMODEM of its hash tag, mod 16384)."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc % 16384


class Opener:
    """Opens short-lived command connections; the transport supplies the real one."""

    async def command(self, node: tuple[str, int], tls: bool, commands: list[tuple[Any, ...]]) -> list[Any]:
        raise NotImplementedError


class Locator:
    """Where the data node is, for one parsed URL; updated by what the nodes say."""

    def __init__(self, target: RedisTarget, slot_tag: str) -> None:
        self.target = target
        self.slot = hash_slot("{" + slot_tag + "}")
        self._moved: tuple[str, int] | None = None
        self._seed_logged = False

    @property
    def topology(self) -> str:
        return self.target.topology

    def moved(self, address: tuple[str, int] | None) -> None:
        """A MOVED named the owner: ask it first next time."""
        if address is not None:
            self._moved = address

    async def locate(self, opener: Opener) -> tuple[str, int]:
        if self.target.topology == "sentinel":
            return await self._from_sentinels(opener)
        if self.target.topology == "cluster":
            return await self._from_cluster(opener)
        return self.target.nodes[0]

    def seen(self, info: dict[str, str], role: str) -> bool:
        """Check the data node after connecting; True when the lookup must run again (a seed)."""
        mode = info.get("redis_mode", "standalone")
        t = self.target
        if mode == "sentinel":
            raise RedisMisconfigured(
                f"{t.redacted} is a Redis Sentinel, not a data node; "
                "use redis+sentinel://host:port/<service_name>"
            )
        if t.topology == "cluster" and mode != "cluster":
            raise RedisMisconfigured(f"{t.redacted} is not a Redis Cluster node (redis_mode:{mode})")
        if t.topology == "sentinel" and role != "master":
            # A Sentinel that has not caught up with a failover yet: an outage, not a mistake.
            raise ConnectionError(f"the node Sentinel named for {t.service!r} is a {role}, not the master")
        if t.topology == "single" and mode == "cluster":
            if t.db != 0:
                raise RedisMisconfigured(f"Redis Cluster has only db 0, but {t.redacted} asks for db {t.db}")
            if not self._seed_logged:
                self._seed_logged = True
                log.warning("%s is a Redis Cluster node; using it as a cluster seed", t.redacted)
            self.target = t.with_topology("cluster")
            return True
        if t.topology == "single" and role not in ("master", ""):
            raise RedisMisconfigured(f"{t.redacted} is a read-only {role}; point the limiter at the master")
        return False

    async def _from_sentinels(self, opener: Opener) -> tuple[str, int]:
        t = self.target
        auth: list[tuple[Any, ...]] = []
        if t.sentinel_password is not None:
            user = (t.sentinel_username,) if t.sentinel_username else ()
            auth = [("AUTH", *user, t.sentinel_password)]

        def answer(node: tuple[str, int], replies: list[Any]) -> tuple[str, int] | None:
            for reply in replies:
                if isinstance(reply, Exception):
                    if "unknown command" in str(reply).lower():
                        raise RedisMisconfigured(
                            f"{node[0]}:{node[1]} in {t.redacted} is not a Redis Sentinel"
                        )
                    raise RedisMisconfigured(f"Sentinel {node[0]}:{node[1]} refused: {reply}")
            if replies[-1] is None:
                raise RedisMisconfigured(f"Sentinel {node[0]}:{node[1]} knows no master named {t.service!r}")
            host, port = replies[-1]
            return _text(host), int(port)

        commands = [*auth, ("SENTINEL", "get-master-addr-by-name", t.service)]
        return await _first_answer(opener, t, t.nodes, commands, answer, "no Sentinel answered")

    async def _from_cluster(self, opener: Opener) -> tuple[str, int]:
        t = self.target
        if self._moved is not None:
            # A MOVED reply named the owner; the handshake checks it, a wrong guess gets MOVED again.
            moved, self._moved = self._moved, None
            return moved
        auth: list[tuple[Any, ...]] = []
        if t.password is not None:
            user = (t.username,) if t.username else ()
            auth = [("AUTH", *user, t.password)]

        def answer(node: tuple[str, int], replies: list[Any]) -> tuple[str, int] | None:
            for reply in replies:
                if isinstance(reply, Exception):
                    text = str(reply)
                    if "cluster support disabled" in text:
                        raise RedisMisconfigured(
                            f"{node[0]}:{node[1]} in {t.redacted} is not a Redis Cluster node"
                        )
                    raise RedisMisconfigured(f"cluster node {node[0]}:{node[1]} refused: {text}")
            for first, last, master, *_ in replies[-1]:
                if int(first) <= self.slot <= int(last):
                    return (_text(master[0]) or node[0]), int(master[1])
            return None  # a node that has not learned the owner yet; another may have

        commands = [*auth, ("CLUSTER", "SLOTS")]
        return await _first_answer(
            opener, t, t.nodes, commands, answer, f"no node gave the owner of slot {self.slot}"
        )


async def _first_answer(
    opener: Opener,
    target: RedisTarget,
    nodes: tuple[tuple[str, int], ...],
    commands: list[tuple[Any, ...]],
    answer: Any,
    failure: str,
) -> tuple[str, int]:
    """Ask every node at once and take the first useful answer: a node that hangs (a frozen
    master among the seeds, a dead Sentinel) must not hold up the lookup."""

    async def ask(node: tuple[str, int]) -> tuple[tuple[str, int], list[Any]]:
        return node, await opener.command(node, target.tls, commands)

    pending = {asyncio.ensure_future(ask(node)) for node in nodes}
    errors: list[str] = []
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                try:
                    node, replies = task.result()
                except (OSError, ConnectionError, TimeoutError) as exc:
                    errors.append(f"{exc or type(exc).__name__}")
                    continue
                found = answer(node, replies)
                if found is not None:
                    return found
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    raise ConnectionError(f"{failure} for {target.redacted} ({'; '.join(errors) or 'no answer'})")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_info(reply: Any) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in _text(reply).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def tls_context(tls: bool) -> ssl.SSLContext | None:
    return ssl.create_default_context() if tls else None


async def wait_all(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """Each reply, with an error reply as an exception object (not raised); a lost connection raises."""
    results: list[Any] = []
    for future in futures:
        try:
            results.append(await future)
        except (ResponseError, AuthenticationError) as exc:
            results.append(exc)
    return results
