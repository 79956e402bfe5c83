"""The shell that holds rate limits region-wide: every `interval_s`, one Redis round trip (one script call)
heartbeats this router, reports what its holdings took and returns, and receives grants from the region's
shared token buckets. Requests never wait on it; when Redis is unreachable `RateLimits` falls back to
local shares, and this loop keeps trying.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from data_plane.limits.rate_limits import RateLimits, SyncBatch, SyncReply
from meridian_common.logging_setup import event
from meridian_common.redis_connection import redis_client

log = logging.getLogger(__name__)

# KEYS[1]: the region's router heartbeats (a sorted set scored by time); KEYS[2..]: one hash per bucket.
# ARGV: router id, heartbeat ttl ms, bucket ttl ms, reserve release ms, then per bucket: capacity, refill
# per ms, delta, want, provisional.
# A bucket refills continuously in Redis time; delta may leave it below zero (a debt refill repays);
# a grant is at most the level shared among the region's routers. A new bucket starts with its whole
# capacity in reserve: every router that meets the subject in the first moments has already spent its
# provisional share of it; what nobody claimed is released into the level after `release ms`.
SYNC_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local heartbeat_ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - heartbeat_ttl)
redis.call('PEXPIRE', KEYS[1], heartbeat_ttl * 4)
local routers = redis.call('ZCARD', KEYS[1])
local release = tonumber(ARGV[4])
local out = {routers}
for i = 2, #KEYS do
  local base = 5 + (i - 2) * 5
  local capacity = tonumber(ARGV[base])
  local rate = tonumber(ARGV[base + 1])
  local delta = tonumber(ARGV[base + 2])
  local want = tonumber(ARGV[base + 3])
  local provisional = tonumber(ARGV[base + 4])
  local stored = redis.call('HMGET', KEYS[i], 'level', 'ts', 'reserve', 'born')
  local level = tonumber(stored[1]) or 0
  local ts = tonumber(stored[2]) or now
  local reserve = tonumber(stored[3]) or capacity
  local born = tonumber(stored[4]) or now
  if reserve > 0 and now - born >= release then
    level = level + reserve
    reserve = 0
  end
  if provisional > 0 then
    local covered = math.min(provisional, reserve)
    reserve = reserve - covered
    level = level - (provisional - covered)
  end
  level = math.min(capacity - reserve, level + math.max(0, now - ts) * rate)
  level = math.max(-capacity, math.min(capacity - reserve, level + delta))
  local grant = 0
  if want > 0 and level > 0 then grant = math.min(want, level / routers) end
  level = level - grant
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'ts', tostring(now), 'reserve', tostring(reserve),
             'born', tostring(born))
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
  out[#out + 1] = tostring(grant)
  out[#out + 1] = tostring(level)
end
return out
"""

_BUCKET_TTL_MS = 180_000  # three minutes: longer than any bucket takes to refill


class SharedLimits:
    def __init__(self, redis_url: str, limits: RateLimits, *, router_id: str, interval_s: float,
                 heartbeat_ttl_s: float) -> None:
        self._client = redis_client(redis_url, socket_connect_timeout=0.25, socket_timeout=0.25)
        self._script = self._client.register_script(SYNC_SCRIPT)
        self._limits = limits
        self._router_id = router_id
        self._interval_s = interval_s
        self._heartbeat_ttl_ms = int(heartbeat_ttl_s * 1000)
        # Long enough for every router of the region to have met a new subject and claimed its share.
        self._release_ms = int(3 * interval_s * 1000)
        self._routers_key = f"meridian:rl:{limits.region}:routers"
        self.last_sync_unix_ms = 0

    async def sync_once(self) -> None:
        limits = self._limits
        batch: SyncBatch = limits.sync_batch(time.monotonic())
        args: list[str | int | float] = [self._router_id, self._heartbeat_ttl_ms, _BUCKET_TTL_MS,
                                         self._release_ms]
        for entry in batch.entries:
            args += [entry.capacity, repr(entry.refill_per_ms), repr(entry.delta), repr(entry.want),
                     repr(entry.provisional)]
        try:
            raw = await self._script(keys=[self._routers_key, *(e.redis_key for e in batch.entries)], args=args)
        except (RedisError, OSError, TimeoutError) as error:
            reason = f"redis unreachable: {type(error).__name__}"
            if limits.sync_failed(batch, time.monotonic(), reason):
                log.warning(event("rate_limits_local_share", region=limits.region, routers=limits.routers,
                                  reason=reason))
            return
        values = [v.decode() if isinstance(v, bytes) else v for v in raw]
        grants = tuple((float(values[1 + 2 * i]), float(values[2 + 2 * i])) for i in range(len(batch.entries)))
        if limits.sync_done(batch, SyncReply(int(values[0]), grants), time.monotonic()):
            log.info(event("rate_limits_shared", region=limits.region, routers=limits.routers))
        self.last_sync_unix_ms = int(time.time() * 1000)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.sync_once()
            await asyncio.sleep(max(0.0, self._interval_s - (time.monotonic() - started)))

    async def close(self) -> None:
        await self._client.aclose()
