"""The one place Redis clients are made, for every user of Redis on both planes (telemetry, shared rate limits,
jobs, the response cache, the control plane's telemetry reader), from one URL (redis_url.py): one Redis server,
or the primary that Redis Sentinel names, asked anew on every connection so that after a failover the next
connection (redis-py reconnects after a connection error) reaches the new primary."""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis_asyncio
from redis.asyncio.sentinel import Sentinel

from meridian_common.redis_url import parse_redis_url


def redis_client(url: str, **options: Any) -> redis_asyncio.Redis:
    """A client for the Redis of `url`; `options` are redis-py's connection options (timeouts, retry...), for
    the primary and, with Sentinel, for asking the sentinels too."""
    target = parse_redis_url(url)
    if target is None:
        return redis_asyncio.Redis.from_url(url, **options)
    timeouts = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout") if key in options}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=timeouts, **timeouts)
    return sentinel.master_for(target.service, db=target.db, username=target.username, password=target.password,
                               **options)
