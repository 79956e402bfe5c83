"""The job store behind Redis Sentinel (a primary, a replica, three sentinels): a submit returns once the replica
holds the job, so the job is still there after the primary is SIGKILLed and the replica promoted; the new
primary, left without a replica, keeps accepting jobs and says so."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import redis

from data_plane.jobs.state import new_job
from data_plane.jobs.store import JobRequest, JobStore, JobsUnavailable, now_ms
from regions.redis_sentinel import primary_address, start_sentinel_group

pytestmark = pytest.mark.integration

FAILOVER_WITHIN_S = 8.0


async def _submit(store: JobStore) -> str:
    job_id = f"job_{uuid.uuid4().hex}"
    await store.submit(new_job(job_id, now_ms=now_ms(), max_attempts=1),
                       JobRequest("chat/completions", b'{"model": "m"}', {}, "client"))
    return job_id


def test_an_accepted_job_survives_the_loss_of_the_primary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    group = start_sentinel_group(tmp_path / "data", tmp_path / "logs")
    primary, replica = group.servers
    try:
        async def scenario() -> None:
            store = JobStore(group.url, "r", result_ttl_s=60, max_queued=100, replicated=True)
            try:
                before = await _submit(store)
                with redis.Redis("127.0.0.1", replica.port) as on_replica:
                    assert on_replica.exists(store.key(before)), "submit returned before the replica held it"
                primary.kill()
                after = None
                deadline = time.monotonic() + FAILOVER_WITHIN_S
                while after is None and time.monotonic() < deadline:
                    try:
                        after = await _submit(store)
                    except JobsUnavailable:
                        await asyncio.sleep(0.2)
                assert after is not None, "no job accepted after the failover"
                assert primary_address([s.port for s in group.sentinels])[1] == replica.port
                for job_id in (before, after):
                    assert await store.load(job_id) is not None
            finally:
                await store.close()

        with caplog.at_level("WARNING", logger="data_plane.jobs.store"):
            asyncio.run(asyncio.wait_for(scenario(), 30))
        assert "job_store_replication" in caplog.text and "replicas=0" in caplog.text
    finally:
        group.stop()
