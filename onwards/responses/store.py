"""Where finished responses wait for a `previous_response_id`.

A stored record is the response object the client saw plus the conversation in Chat
Completions form (every message up to the final answer, tool exchanges included, the
instructions left out as the Responses API does). The next request's history is that list,
so continuing a conversation is one read and no re-conversion.

Two backends behind one Protocol: `MemoryResponseStore` (one process; bounded, oldest
evicted first) and `RedisResponseStore` (shared by every worker and replica; one string key
per response, `<prefix>:responses:<id>`, JSON, with a TTL, so `redis-cli GET` shows it).
A request with `store: false` is never saved. The in-process store keeps at most
10 000 responses and 256 MiB per worker, the oldest going first. Redis is read and written with redis-py's
asyncio client: this is off the limiter's hot path, one GET before and one SET after a
response.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

log = logging.getLogger("onwards.responses")

# Ids the gateway makes are `resp_` + hex; anything else cannot name a stored response and is
# not put into a Redis key.
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

DEFAULT_TTL_SECS = 30 * 24 * 3600  # the Responses API keeps responses 30 days by default
DEFAULT_MAX_ENTRIES = 10_000
# Conversations can carry images as data: URLs; the in-process store is bounded by size too.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]
    messages: list[dict[str, Any]]

    def encode(self) -> bytes:
        return orjson.dumps({"response": self.response, "messages": self.messages})

    @classmethod
    def decode(cls, raw: bytes | str) -> StoredResponse | None:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
            return None
        return cls(response=value.get("response") or {}, messages=value["messages"])


class ResponseStoreError(Exception):
    """The store could not be read or written (Redis down, for example)."""


class ResponseStore(Protocol):
    async def save(self, response_id: str, record: StoredResponse) -> None: ...

    async def load(self, response_id: str) -> StoredResponse | None: ...


def valid_id(response_id: Any) -> bool:
    return isinstance(response_id, str) and _ID.fullmatch(response_id) is not None


class MemoryResponseStore:
    """In-process store: at most `max_entries` and `max_bytes`, each kept `ttl_secs`."""

    def __init__(
        self,
        ttl_secs: float = DEFAULT_TTL_SECS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._ttl = ttl_secs
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def save(self, response_id: str, record: StoredResponse) -> None:
        # Kept encoded: the caller may go on mutating its dicts, the stored copy must not move.
        raw = record.encode()
        self._drop(response_id)
        self._items[response_id] = (self._clock() + self._ttl, raw)
        self._bytes += len(raw)
        while len(self._items) > self._max or (self._bytes > self._max_bytes and len(self._items) > 1):
            self._drop(next(iter(self._items)))

    def _drop(self, response_id: str) -> None:
        entry = self._items.pop(response_id, None)
        if entry is not None:
            self._bytes -= len(entry[1])

    async def load(self, response_id: str) -> StoredResponse | None:
        entry = self._items.get(response_id)
        if entry is None:
            return None
        expires, raw = entry
        if expires <= self._clock():
            self._drop(response_id)
            return None
        return StoredResponse.decode(raw)


class RedisResponseStore:
    """Shared store: `<prefix>:responses:<id>` string keys holding JSON, expiring after `ttl_secs`."""

    def __init__(self, client: aioredis.Redis, prefix: str = "onwards", ttl_secs: int = DEFAULT_TTL_SECS):
        self._client = client
        self._prefix = f"{prefix}:responses:"
        self._ttl = max(1, int(ttl_secs))

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "onwards", ttl_secs: int = DEFAULT_TTL_SECS
    ) -> RedisResponseStore:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
        return cls(client, prefix, ttl_secs)

    def key(self, response_id: str) -> str:
        return self._prefix + response_id

    async def save(self, response_id: str, record: StoredResponse) -> None:
        try:
            await self._client.set(self.key(response_id), record.encode(), ex=self._ttl)
        except aioredis.RedisError as error:
            raise ResponseStoreError(f"could not store response {response_id}: {error}") from error

    async def load(self, response_id: str) -> StoredResponse | None:
        try:
            raw = await self._client.get(self.key(response_id))
        except aioredis.RedisError as error:
            raise ResponseStoreError(f"could not read response {response_id}: {error}") from error
        if raw is None:
            return None
        record = StoredResponse.decode(raw)
        if record is None:
            log.warning("stored response %s is not valid JSON; treated as missing", response_id)
        return record

    async def close(self) -> None:
        await self._client.aclose()
