"""Response cache for deterministic requests to models that opted in: in-memory LRU, or Redis when configured.
Entries are kept per client when clients have keys, so that a hit never tells one tenant what another asked.

A Redis failure is a miss, never a failed request; after one, Redis is skipped for a cool-down so a dead
Redis costs no latency on every request. Answers are written after the response is handed back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from data_plane.serving.request_shapes import ParsedRequest
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

# Fields that change how a response is delivered or attributed, not what it says.
_DELIVERY_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
DETERMINISM_HEADER = "x-meridian-deterministic"
OPT_IN_HEADER = "x-meridian-cache"


@dataclass(frozen=True, slots=True)
class CachedResponse:
    status: int
    body: bytes
    content_type: str


def cache_key(parsed: ParsedRequest, scope: str) -> str:
    """The request's fields as sent, but those that only change delivery, and its endpoint; `scope` is the client's
    identity when clients have keys, "" for a cache shared by every client."""
    return parsed.body.digest(scope.encode() + b"\0" + parsed.endpoint.encode(), _DELIVERY_FIELDS)


def should_cache(parsed: ParsedRequest, headers: Any, *, model_opted_in: bool) -> bool:
    """The model opted in (a client may only opt out, with `x-meridian-cache: off`), not streamed, and
    deterministic (temperature 0, or `x-meridian-deterministic: true`)."""
    if not model_opted_in or headers.get(OPT_IN_HEADER, "").lower() == "off" or parsed.streaming:
        return False
    return headers.get(DETERMINISM_HEADER, "").lower() == "true" or parsed.temperature == 0


class CacheStore(Protocol):
    async def get(self, key: str) -> CachedResponse | None: ...
    async def set(self, key: str, value: CachedResponse, ttl_s: float) -> None: ...
    async def clear(self) -> int: ...
    def describe(self) -> dict[str, Any]: ...


class MemoryCacheStore:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, CachedResponse]] = OrderedDict()
        self._max_entries = max_entries

    async def get(self, key: str) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: CachedResponse, ttl_s: float) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        return count

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory", "entries": len(self._entries), "max_entries": self._max_entries}


class RedisCacheStore:
    def __init__(self, client: redis_asyncio.Redis, *, prefix: str = "meridian:cache:",
                 cooldown_s: float = 5.0) -> None:
        self._client = client
        self._prefix = prefix
        self._cooldown_s = cooldown_s
        self._skip_until = 0.0
        self.errors = 0

    def _available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, operation: str, error: Exception) -> None:
        self.errors += 1
        self._skip_until = time.monotonic() + self._cooldown_s
        log.warning(event("cache_redis_error", operation=operation, error=type(error).__name__,
                          cooldown_s=self._cooldown_s))

    async def get(self, key: str) -> CachedResponse | None:
        if not self._available():
            return None
        try:
            raw = await self._client.get(self._prefix + key)
        except (RedisError, OSError) as error:
            self._failed("get", error)
            return None
        if raw is None:
            return None
        meta, _, body = raw.partition(b"\n")
        stored = orjson.loads(meta)
        return CachedResponse(stored["status"], body, stored["content_type"])

    async def set(self, key: str, value: CachedResponse, ttl_s: float) -> None:
        if not self._available():
            return
        # The body as it came, whatever its encoding, after one line of JSON (which never holds a newline).
        payload = orjson.dumps({"status": value.status, "content_type": value.content_type}) + b"\n" + value.body
        try:
            await self._client.set(self._prefix + key, payload, px=max(1, int(ttl_s * 1000)))
        except (RedisError, OSError) as error:
            self._failed("set", error)

    async def clear(self) -> int:
        removed = 0
        try:
            async for key in self._client.scan_iter(match=self._prefix + "*", count=500):
                removed += await self._client.delete(key)
        except (RedisError, OSError) as error:
            self._failed("clear", error)
        return removed

    def describe(self) -> dict[str, Any]:
        return {"backend": "redis", "errors": self.errors, "available": self._available()}


class ResponseCache:
    """Counts hits and misses in front of a store, and writes answers in the background."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.hits = 0
        self.misses = 0
        self._writes: set[asyncio.Task[None]] = set()

    def store_later(self, key: str, value: CachedResponse, ttl_s: float) -> None:
        """Writes the answer without holding back the response it belongs to."""
        task = asyncio.create_task(self.store.set(key, value, ttl_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Waits for the writes still running (at shutdown, before the store is closed)."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def lookup(self, key: str) -> CachedResponse | None:
        value = await self.store.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, **self.store.describe()}
