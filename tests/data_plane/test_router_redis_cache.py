"""The response cache in Redis: hits across requests, and a Redis failure never fails a request. Answers are a
few tokens on purpose: the cache's behaviour does not depend on their length."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from data_plane.serving.response_cache import CachedResponse, RedisCacheStore, ResponseCache
from regions.local_services import start_redis
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, str], dict[str, object]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), json.loads(response.read())


def test_redis_cache_hits_and_survives_redis_loss(tmp_path: Path, start_simulator: StartSimulator,
                                                  start_router: StartRouter) -> None:
    redis = start_redis(tmp_path / "redis", tmp_path / "redis.log")
    try:
        sim = start_simulator("cache-sim", "--model", "m")
        router = start_router("cache-router", f"""region: test
redis_url: {redis.url}
models:
  m:
    cache: {{enabled: true, ttl_s: 60}}
    deployments:
{deployment_yaml("cache-sim", sim.url)}
""")
        body = {"model": "m", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0,
                "max_tokens": 3}
        url = f"{router.url}/v1/chat/completions"
        first, second = _post(url, body), _post(url, body)
        assert first[1]["x-meridian-cache"] == "miss" and second[1]["x-meridian-cache"] == "hit"
        assert first[2]["choices"] == second[2]["choices"]
        redis.kill()
        for _ in range(3):
            status, headers, payload = _post(url, {**body, "max_tokens": 4})
            assert status == 200 and headers["x-meridian-cache"] == "miss" and payload["choices"]
    finally:
        redis.stop()


def test_any_body_round_trips_and_is_written_after_the_answer(tmp_path: Path) -> None:
    """A backend's body need not be UTF-8 (it was decoded, and a 200 became a 500); the write runs in the
    background and is done once drained."""
    redis = start_redis(tmp_path / "redis-data", tmp_path / "redis.log")

    async def scenario() -> None:
        client = redis_asyncio.Redis.from_url(redis.url)
        cache = ResponseCache(RedisCacheStore(client))
        try:
            body = b'{"text": "caf\xe9 \xff\xfe"}\n{"second line": 1}'
            cache.store_later("k", CachedResponse(200, body, "application/json"), ttl_s=30)
            await cache.drain()
            assert await cache.lookup("k") == CachedResponse(200, body, "application/json")
        finally:
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        redis.stop()
