"""etcd stops under a leading replica: it stops publishing within the lease TTL and says so (log and
status), and keeps serving the tables it holds to routers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from replica_fixtures import (
    LEASE_TTL_S,
    RecordingRouter,
    config_document,
    health,
    http,
    new_prefix,
    start_replica,
    subscriber,
    wait_async,
    write_config,
)

from benchmarks.control_plane_stack import wait_for
from regions.local_services import RunningService, start_etcd

pytestmark = pytest.mark.integration


def test_without_etcd_the_leader_stops_publishing_and_says_so(
    redis_server: RunningService, tmp_path: Path
) -> None:
    etcd = start_etcd(tmp_path / "etcd-data", tmp_path / "etcd.log")
    config = write_config(tmp_path / "cp.yaml", config_document(etcd.url, redis_server.url, new_prefix()))
    replica = start_replica("cp-solo", config, tmp_path)
    try:
        wait_for(lambda: health(replica)["publishing"] and health(replica)["regions"] == ["eu-west", "us-east"],
                 "the replica leads, publishes and serves its tables")
        grpc_target = health(replica)["grpc"]
        etcd.stop()
        wait_for(lambda: not health(replica)["publishing"], "publishing stopped", LEASE_TTL_S + 1.5)
        status_code, status = http("GET", replica.url + "/v1/status")
        assert status_code == 200
        assert status["etcd"]["reachable"] is False and status["leader"] is None
        assert status["this_replica"]["publishing"] is False
        assert "cannot prove leadership: not publishing" in status["this_replica"]["reason"]
        assert [r["role"] for r in status["replicas"]] == ["no-quorum"]
        log = replica.log_path.read_text()
        assert log.count("publishing_stopped") == 1
        assert 'reason="cannot prove leadership: not publishing"' in log
        assert http("POST", replica.url + "/v1/policy/set",
                    {"region": "eu-west", "model": "llama-3.3-70b", "policy": "cost-first"})[0] == 503

        async def still_serving() -> None:
            router = RecordingRouter.empty()
            async with subscriber([grpc_target], router):
                await wait_async(lambda: router.tables, "the held table, without etcd", 5)

        asyncio.run(asyncio.wait_for(still_serving(), 10))
    finally:
        replica.stop()
        etcd.stop()
