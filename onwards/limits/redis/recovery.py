"""After Redis lost its data, the permits this worker holds go back before it admits anything new.

Every lease this worker was granted and has not given back is in the `LeaseBook`. The first call
on every new connection is lua/adopt.lua (sent by EVAL, since a Redis that lost its data lost its
script cache too): it compares the epoch marker in Redis with the one this worker last saw, and when
the marker is missing or new, puts the held leases back with ZADD NX. A connection is new after a
restart, a failover or any reconnect, and the call goes ahead of every admission on it, so a
concurrency limit stays at most its size on the worker's own account.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from onwards.limits.keys import KeySpace
from onwards.limits.redis.encoding import load_script
from onwards.limits.redis.transport import pack_command

log = logging.getLogger("onwards.limits")

# A request that never gave its lease back (a bug elsewhere) must not grow the book forever.
MAX_HELD = 100_000


class LeaseBook:
    def __init__(self, keys: KeySpace) -> None:
        self._keys = keys
        self._script = load_script("adopt")
        self._epoch_key = f"{keys.base}:epoch"
        self._held: dict[str, tuple[str, ...]] = {}
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

    def drop(self, lease_id: str) -> None:
        self._held.pop(lease_id, None)

    def greet(self, send: Callable[[bytes], asyncio.Future[Any]]) -> None:
        """The first call on a new connection (the transport's on_connect hook)."""
        keys: list[str] = [self._epoch_key]
        leases: list[str] = []
        for lease_id, limiter_ids in self._held.items():
            for limiter_id in limiter_ids:
                keys.append(self._keys.semaphore(limiter_id))
                leases.append(lease_id)
        args = ("EVAL", self._script.body, len(keys), *keys, self.epoch, os.urandom(8).hex(), self.ttl_ms)
        send(pack_command((*args, *leases))).add_done_callback(self._answered)

    def _answered(self, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            # The connection failed again, or the node refused (a replica): the next one greets.
            return
        epoch, readded = done.result()
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if readded:
            self.readded += int(readded)
            log.warning(
                "Redis lost its data (limiter epoch %s -> %s); %d held permits put back",
                self.epoch or "none",
                epoch,
                readded,
            )
        self.epoch = epoch
