"""On every new connection, Redis is told again which permits this worker holds and gave back.

A new connection may reach a Redis that lost its data (a restart without persistence) or a replica
a failover promoted before it had the last writes: leases granted before are missing there, and
releases sent to the old master never arrived. The `LeaseBook` keeps the leases this worker holds
and those it gave back in the last RECENT_S; the first call on each new connection is
lua/adopt.lua (by EVAL: a Redis that lost its data lost its script cache too), which puts the held
ones back (ZADD NX) and removes the released ones again (ZREM), ahead of every admission on that
connection. So a concurrency limit stays at most its size on this worker's account, and no permit
is orphaned by a lost release. The epoch marker in Redis tells a data loss apart, for the log.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from onwards.limits.keys import KeySpace
from onwards.limits.redis.encoding import load_script
from onwards.limits.redis.transport import pack_command

log = logging.getLogger("onwards.limits")

# A request that never gave its lease back (a bug elsewhere) must not grow the book forever.
MAX_HELD = 100_000
# Releases are repeated on a new connection for this long: far longer than replication lag.
RECENT_S = 10.0
MAX_RECENT = 20_000


class LeaseBook:
    def __init__(self, keys: KeySpace, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._clock = clock
        self._script = load_script("adopt")
        self._epoch_key = f"{keys.base}:epoch"
        self._held: dict[str, tuple[str, ...]] = {}
        self._recent: collections.deque[tuple[float, str, tuple[str, ...]]] = collections.deque()
        self.epoch = ""  # the marker last seen; "" before the first connection
        self.ttl_ms = 30_000
        self.readded = 0  # leases put back over this worker's life, for logs and tests

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, lease_id: str, limiter_ids: tuple[str, ...]) -> None:
        held = self._held
        if len(held) >= MAX_HELD:
            held.pop(next(iter(held)))
        held[lease_id] = limiter_ids

    def drop(self, lease_id: str, limiter_ids: tuple[str, ...]) -> None:
        """The lease is given back (or was never handed out): forget it, repeat its release later."""
        self._held.pop(lease_id, None)
        recent = self._recent
        recent.append((self._clock(), lease_id, limiter_ids))
        if len(recent) > MAX_RECENT:
            recent.popleft()

    def greet(self, send: Callable[[bytes], asyncio.Future[Any]]) -> None:
        """The first call on a new connection (the transport's on_connect hook)."""
        recent = self._recent
        horizon = self._clock() - RECENT_S
        while recent and recent[0][0] < horizon:
            recent.popleft()
        semaphore = self._keys.semaphore
        keys: list[str] = [self._epoch_key]
        leases: list[str] = []
        for lease_id, limiter_ids in self._held.items():
            for limiter_id in limiter_ids:
                keys.append(semaphore(limiter_id))
                leases.append(lease_id)
        held = len(leases)
        for _, lease_id, limiter_ids in recent:
            for limiter_id in limiter_ids:
                keys.append(semaphore(limiter_id))
                leases.append(lease_id)
        head = ("EVAL", self._script.body, len(keys), *keys)
        args = (*head, self.epoch, os.urandom(8).hex(), self.ttl_ms, held, *leases)
        send(pack_command(args)).add_done_callback(self._answered)

    def _answered(self, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            # The connection failed again, or the node refused (a replica): the next one greets.
            return
        epoch, readded, removed = done.result()
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        lost = self.epoch != "" and epoch != self.epoch
        if readded or lost:
            self.readded += int(readded)
            log.warning(
                "Redis %s: %d held permits put back, %d given-back permits removed again",
                "lost its data" if lost else "missed writes (failover)",
                readded,
                removed,
            )
        self.epoch = epoch
