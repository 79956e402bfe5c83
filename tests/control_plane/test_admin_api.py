"""The gRPC Admin service of an in-process replica (real etcd and Redis): the bearer token, validation with
every reason, dry runs that write nothing, set, history, rollback and status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from replica_fixtures import LLAMA, TOKEN, config_document, new_prefix, wait_async

from control_plane.config import parse_control_plane_config
from control_plane.replica import ListenPorts, Replica
from meridian_proto import policy_pb2, policy_pb2_grpc
from regions.local_services import RunningService

pytestmark = pytest.mark.integration

AUTH = (("authorization", f"Bearer {TOKEN}"),)


def with_admin(etcd: RunningService, redis_server: RunningService,
               body: Callable[[policy_pb2_grpc.AdminStub, Replica], Awaitable[Any]]) -> None:
    async def run() -> None:
        config = parse_control_plane_config(config_document(etcd.url, redis_server.url, new_prefix()), "test")
        replica = Replica(config, replica_id="cp-inproc", token=TOKEN, ports=ListenPorts(0, 0, 0))
        ready = asyncio.Event()
        task = asyncio.create_task(replica.run(ready=ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await wait_async(lambda: replica.publisher_status.publishing, "leading")
            assert replica.addresses is not None
            async with grpc.aio.insecure_channel(replica.addresses.admin_grpc) as channel:
                await body(policy_pb2_grpc.AdminStub(channel), replica)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(run(), 30))


def test_grpc_admin_requires_the_token_and_never_logs_it(
    etcd: RunningService, redis_server: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-token-" + TOKEN

    async def body(stub: policy_pb2_grpc.AdminStub, replica: Replica) -> None:
        for metadata in ((), (("authorization", f"Bearer {wrong}"),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ShowPolicy(policy_pb2.ShowPolicyRequest(), metadata=metadata)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert (await stub.ShowPolicy(policy_pb2.ShowPolicyRequest(), metadata=AUTH)).version == 0

    with caplog.at_level(logging.INFO):
        with_admin(etcd, redis_server, body)
    refusals = [r.getMessage() for r in caplog.records if "admin_refused" in r.getMessage()]
    assert len(refusals) == 2 and "transport=grpc" in refusals[0]
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_grpc_admin_policy_operations(etcd: RunningService, redis_server: RunningService) -> None:
    async def body(stub: policy_pb2_grpc.AdminStub, replica: Replica) -> None:
        bad = "models:\n  - {region: eu-west, model: nope, policy: fastest}\n"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=bad), metadata=AUTH)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        details = refused.value.details() or ""
        assert "unknown model 'nope'" in details and "unknown policy 'fastest'" in details

        good = f"models:\n  - {{region: eu-west, model: {LLAMA}, policy: cost-first, latency_budget_ms: 700}}\n"
        dry = await stub.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=good, dry_run=True), metadata=AUTH)
        assert not dry.applied and "+policy: cost-first" in dry.diff and "@@ eu-west / llama-3.3-70b @@" in dry.diff
        assert (await stub.ShowPolicy(policy_pb2.ShowPolicyRequest(), metadata=AUTH)).version == 0

        applied = await stub.ApplyPolicy(policy_pb2.ApplyPolicyRequest(yaml=good, author="ops"), metadata=AUTH)
        assert applied.applied and applied.document.version > 0 and applied.document.author == "ops"
        changes = policy_pb2.ModelPolicy(region="eu-west", model=LLAMA, priority="speed")
        changed = await stub.SetPolicyField(policy_pb2.SetPolicyFieldRequest(changes=changes), metadata=AUTH)
        entry = changed.document.models[0]
        assert (entry.policy, entry.latency_budget_ms, entry.priority) == ("cost-first", 700, "speed")

        history = await stub.History(policy_pb2.HistoryRequest(), metadata=AUTH)
        assert [d.version for d in history.documents] == [changed.document.version, applied.document.version]
        rolled = await stub.Rollback(policy_pb2.RollbackRequest(version=applied.document.version), metadata=AUTH)
        assert rolled.applied and rolled.document.models[0].priority == ""
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Rollback(policy_pb2.RollbackRequest(version=10**9), metadata=AUTH)
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND

        await wait_async(lambda: (t := replica.cache.get("eu-west")) is not None
                         and t.models[0].priority != "speed" and t.models[0].policy == "cost-first",
                         "the leader published the rolled-back policy")
        status = await stub.Status(policy_pb2.StatusRequest(), metadata=AUTH)
        assert status.leader.id == "cp-inproc" and status.leader.epoch > 0
        assert [r.role for r in status.replicas] == ["leader"]
        assert sorted(t.region for t in status.tables) == ["eu-west", "us-east"]

    with_admin(etcd, redis_server, body)
