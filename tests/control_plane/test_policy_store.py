"""PolicyStore against a real etcd: versions are write revisions, optimistic writes refuse a stale read,
the superseded document lands in the history in the same transaction, rollback adds a version, only the newest
versions are kept, and with etcd's compaction the database stays bounded however many pushes it takes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aetcd
import pytest
from replica_fixtures import new_prefix

from benchmarks.etcd_growth import db_size, policy_document
from control_plane.etcd_keys import EtcdKeys
from control_plane.policy.store import PolicyConflict, PolicyStore, UnknownPolicyVersion
from meridian_proto import policy_pb2
from regions.local_services import RunningService, start_etcd

pytestmark = pytest.mark.integration


def doc(policy: str) -> policy_pb2.PolicyDocument:
    return policy_pb2.PolicyDocument(models=[policy_pb2.ModelPolicy(region="eu-west", model="m", policy=policy)])


def with_store(etcd: RunningService, body: Callable[[PolicyStore, aetcd.Client], Awaitable[Any]],
               versions_kept: int = 100, timeout_s: float = 15) -> Any:
    async def run() -> Any:
        async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
            return await body(PolicyStore(client, EtcdKeys(new_prefix()), versions_kept=versions_kept), client)

    return asyncio.run(asyncio.wait_for(run(), timeout_s))


async def push(store: PolicyStore, count: int, first: int = 0) -> list[int]:
    """`count` writes, each on the one before; their versions."""
    current = await store.current()
    versions = []
    for index in range(first, first + count):
        current = await store.write(policy_document(index), previous=current, author="t", now_unix_ms=index)
        versions.append(current.version)
    return versions


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


@pytest.mark.parametrize(("versions_kept", "pushes"), [(1, 3), (2, 1), (2, 4), (5, 3), (5, 12)])
def test_only_the_newest_versions_are_kept(etcd: RunningService, versions_kept: int, pushes: int) -> None:
    async def body(store: PolicyStore, client: aetcd.Client) -> None:
        versions = await push(store, pushes)
        kept = versions[::-1][:versions_kept]
        assert [d.version for d in await store.history()] == kept
        assert (await store.get(kept[-1])).version == kept[-1]
        for pruned in versions[: max(0, len(versions) - versions_kept)]:
            with pytest.raises(UnknownPolicyVersion):
                await store.get(pruned)

    with_store(etcd, body, versions_kept=versions_kept)


def test_a_rollback_reaches_only_kept_versions(etcd: RunningService) -> None:
    async def body(store: PolicyStore, client: aetcd.Client) -> None:
        versions = await push(store, 4)
        rolled = await store.rollback(versions[1], author="t", now_unix_ms=9)
        assert [d.version for d in await store.history()] == [rolled.version, versions[3], versions[2]]
        with pytest.raises(UnknownPolicyVersion, match=f"no policy version {versions[0]}"):
            await store.rollback(versions[0], author="t", now_unix_ms=10)

    with_store(etcd, body, versions_kept=3)


def test_versions_kept_counts_the_document_in_force() -> None:
    with pytest.raises(ValueError, match="versions_kept must be >= 1"):
        PolicyStore(None, EtcdKeys("/t"), versions_kept=0)  # type: ignore[arg-type]


PUSHES_PER_ROUND = 300
ROUNDS = 6
COMPACTION_RETENTION_S = 1.0


def test_the_database_stays_bounded_with_compaction(tmp_path: Path) -> None:
    """Rounds of pushes with a pause for etcd's compactor: the history stays at its limit and the database file
    stops growing after the first round, as compaction frees pages that later writes reuse. Uncompacted, each
    round adds as much again (about 700 KiB here). Figures for 10,000 pushes: `meridian bench etcd-growth`."""
    etcd = start_etcd(tmp_path / "etcd", tmp_path / "etcd.log", compaction_retention_s=COMPACTION_RETENTION_S)

    async def body(store: PolicyStore, client: aetcd.Client) -> None:
        sizes = []
        for round_number in range(ROUNDS):
            await push(store, PUSHES_PER_ROUND, first=round_number * PUSHES_PER_ROUND)
            assert len(await store.history()) == 5
            sizes.append((await db_size(client)).total_bytes)
            await asyncio.sleep(2 * COMPACTION_RETENTION_S)
        assert sizes[-1] <= 2 * sizes[0], f"db size after each round of {PUSHES_PER_ROUND} pushes: {sizes}"

    try:
        with_store(etcd, body, versions_kept=5, timeout_s=120)
    finally:
        etcd.stop()
