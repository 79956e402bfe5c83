"""PolicyStore against a real etcd: versions are write revisions, optimistic writes refuse a stale read,
the superseded document lands in the history in the same transaction, rollback adds a version."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd
import pytest
from replica_fixtures import new_prefix

from control_plane.etcd_keys import EtcdKeys
from control_plane.policy.store import PolicyConflict, PolicyStore, UnknownPolicyVersion
from meridian_proto import policy_pb2
from regions.local_services import RunningService

pytestmark = pytest.mark.integration


def doc(policy: str) -> policy_pb2.PolicyDocument:
    return policy_pb2.PolicyDocument(models=[policy_pb2.ModelPolicy(region="eu-west", model="m", policy=policy)])


def with_store(etcd: RunningService, body: Callable[[PolicyStore, aetcd.Client], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
            return await body(PolicyStore(client, EtcdKeys(new_prefix())), client)

    return asyncio.run(asyncio.wait_for(run(), 15))


def test_versions_history_and_conflicts(etcd: RunningService) -> None:
    async def body(store: PolicyStore, client: aetcd.Client) -> None:
        empty = await store.current()
        assert empty.version == 0 and not empty.models and await store.history() == []
        first = await store.write(doc("cost-first"), previous=empty, author="ann", now_unix_ms=1)
        assert first.version > 0 and first.author == "ann" and first.applied_at_unix_ms == 1
        with pytest.raises(PolicyConflict):
            await store.write(doc("weighted"), previous=empty, author="bob", now_unix_ms=2)
        assert (await store.current()).models[0].policy == "cost-first"
        second = await store.write(doc("weighted"), previous=first, author="bob", now_unix_ms=3)
        assert second.version > first.version
        history = await store.history()
        assert [d.version for d in history] == [second.version, first.version]
        assert [d.models[0].policy for d in history] == ["weighted", "cost-first"]
        assert (await store.get(first.version)).author == "ann"
        with pytest.raises(UnknownPolicyVersion):
            await store.get(second.version + 1000)
        rolled = await store.rollback(first.version, author="cy", now_unix_ms=4)
        assert rolled.version > second.version and rolled.models[0].policy == "cost-first"
        assert rolled.comment.startswith(f"rollback to version {first.version}")
        assert len(await store.history()) == 3 and len(await store.history(limit=2)) == 2

    with_store(etcd, body)


def test_observe_yields_the_current_document_then_each_new_one(etcd: RunningService) -> None:
    async def body(store: PolicyStore, client: aetcd.Client) -> None:
        first = await store.write(doc("cost-first"), previous=await store.current(), author="a", now_unix_ms=1)
        async with contextlib.aclosing(store.observe()) as documents:
            seen = await anext(documents)
            assert seen.version == first.version
            second = await store.write(doc("weighted"), previous=first, author="a", now_unix_ms=2)
            changed = await asyncio.wait_for(anext(documents), 5)
            assert changed.version == second.version and changed.models[0].policy == "weighted"

    with_store(etcd, body)
