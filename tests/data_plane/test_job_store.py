"""The job store against a real Redis: the queue limits of the region and of each client, and an index that
is trimmed as jobs are written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from data_plane.jobs.state import new_job
from data_plane.jobs.store import JobRequest, JobStore, QueueFull, now_ms
from regions.local_services import RunningService, start_redis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    directory: Path = tmp_path_factory.mktemp("job-store")
    service = start_redis(directory / "data", directory / "redis.log")
    yield service
    service.stop()


def _job(created_ms: int | None = None) -> tuple[str, int]:
    return f"job_{uuid.uuid4().hex}", now_ms() if created_ms is None else created_ms


async def _submit(store: JobStore, client: str, created_ms: int | None = None) -> str:
    job_id, created = _job(created_ms)
    await store.submit(new_job(job_id, now_ms=created, max_attempts=1),
                       JobRequest("chat/completions", b'{"model": "m"}', {}, client))
    return job_id


def test_one_client_cannot_fill_the_regions_queue(redis: RunningService) -> None:
    async def scenario() -> None:
        store = JobStore(redis.url, f"r-{uuid.uuid4().hex[:6]}", result_ttl_s=60, max_queued=10,
                         max_queued_per_client=2)
        try:
            await _submit(store, "key-a")
            await _submit(store, "key-a")
            with pytest.raises(QueueFull, match="this client has 2 jobs queued"):
                await _submit(store, "key-a")
            await _submit(store, "key-b")  # another client still gets in
            claimed = await store.claim_next("router-1", lease_ms=5000)
            assert claimed is not None and claimed.request.identity == "key-a"
            await _submit(store, "key-a")  # a job of a's left the queue: room for one more
            with pytest.raises(QueueFull, match="this client"):
                await _submit(store, "key-a")
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_regions_queue_limit_still_holds(redis: RunningService) -> None:
    async def scenario() -> None:
        store = JobStore(redis.url, f"r-{uuid.uuid4().hex[:6]}", result_ttl_s=60, max_queued=3,
                         max_queued_per_client=100)
        try:
            for client in ("key-a", "key-b", "key-c"):
                await _submit(store, client)
            with pytest.raises(QueueFull, match="region's job queue holds 3"):
                await _submit(store, "key-d")
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_index_is_trimmed_when_jobs_are_written(redis: RunningService) -> None:
    async def scenario() -> None:
        region = f"r-{uuid.uuid4().hex[:6]}"
        store = JobStore(redis.url, region, result_ttl_s=1, max_queued=1000, max_queued_per_client=1000)
        try:
            old = await _submit(store, "key-a", created_ms=now_ms() - 10_000)  # older than twice the ttl
            fresh = await _submit(store, "key-a")
            reader = redis_asyncio.Redis.from_url(redis.url)
            members = {m.decode() for m in await reader.zrange(f"meridian:jobs:{region}:index", 0, -1)}
            await reader.aclose()
            assert members == {fresh}, f"the entry of {old} should be gone"
        finally:
            await store.close()

    asyncio.run(scenario())
