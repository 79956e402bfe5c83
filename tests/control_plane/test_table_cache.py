"""The table cache: versioned per region, consistency-checked, waking only the watches that need a table."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from control_plane.distribution.session import RouterRecord
from control_plane.distribution.table_cache import InconsistentTableError, StaleTableError, TableCache
from meridian_common.table_distribution import NackRecord
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2

C1, C2 = 0xC1, 0xC2  # two etcd clusters


def make_table(version: int, region: str = "eu", model: str = "m", cluster: int = C1) -> routing_pb2.RoutingTable:
    models = [routing_pb2.ModelRoute(model=model, policy="latency-first")]
    return routing_pb2.RoutingTable(version=version, epoch=1, region=region, models=models,
                                    content_hash=content_hash(models), source="control-plane", cluster_id=cluster)


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 5.0))


def test_set_and_get_per_region() -> None:
    cache = TableCache("cp-1")
    assert cache.get("eu") is None
    assert cache.set_table(make_table(3, "eu"))
    assert cache.set_table(make_table(1, "us"))
    assert cache.get("eu") == make_table(3, "eu")
    assert cache.regions() == ["eu", "us"]


def test_the_cache_keeps_its_own_copy() -> None:
    cache = TableCache("cp-1")
    table = make_table(3)
    cache.set_table(table)
    table.version = 99
    assert cache.get("eu").version == 3  # type: ignore[union-attr]


def test_older_version_is_refused_and_the_current_kept() -> None:
    cache = TableCache("cp-1")
    cache.set_table(make_table(5))
    with pytest.raises(StaleTableError, match="older than the cached version 5"):
        cache.set_table(make_table(4))
    assert cache.get("eu").version == 5  # type: ignore[union-attr]


def test_same_version_is_a_no_op_unless_its_content_differs() -> None:
    cache = TableCache("cp-1")
    cache.set_table(make_table(5))
    assert cache.set_table(make_table(5)) is False
    with pytest.raises(StaleTableError, match="differs from the cached table of the same version"):
        cache.set_table(make_table(5, model="other"))


@pytest.mark.parametrize(
    ("cached", "offered", "newest", "taken"),
    [
        ((5, C1), (4, C2), False, True),  # etcd rebuilt: its versions start anew
        ((5, C1), (5, C2, "other"), False, True),
        ((5, C1), (4, C1), True, True),  # read from etcd just now: the cluster no longer has version 5
        ((5, C1), (4, C1), False, False),
        ((5, C1), (5, C1, "other"), True, False),  # one version, two contents: never
        ((5, C1), (6, C1), True, True),
    ],
    ids=["other-cluster", "other-cluster-same-version", "newest-in-cluster", "older", "conflicting", "newer"],
)
def test_versions_compare_within_one_cluster(
    cached: tuple[int, int], offered: tuple[int, ...], newest: bool, taken: bool
) -> None:
    cache = TableCache("cp-1")
    cache.set_table(make_table(cached[0], cluster=cached[1]))
    table = make_table(int(offered[0]), cluster=int(offered[1]), model=str(offered[2]) if len(offered) > 2 else "m")
    if taken:
        assert cache.set_table(table, newest=newest)
        assert cache.get("eu") == table
    else:
        with pytest.raises(StaleTableError):
            cache.set_table(table, newest=newest)
        assert cache.get("eu") == make_table(cached[0], cluster=cached[1])


def test_a_watch_wakes_for_the_same_version_of_another_cluster() -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(3))
        with cache.watch("eu") as watch:
            assert (await watch.next()).cluster_id == C1
            cache.set_table(make_table(3, cluster=C2))
            assert watch.notified
            assert (await watch.next()).cluster_id == C2

    run(body())


@pytest.mark.parametrize(
    "table",
    [
        routing_pb2.RoutingTable(version=1, region="eu", content_hash="nope",
                                 models=[routing_pb2.ModelRoute(model="m")]),
        routing_pb2.RoutingTable(version=1, region="", content_hash=content_hash([])),
    ],
    ids=["hash-mismatch", "no-region"],
)
def test_inconsistent_tables_are_never_served(table: routing_pb2.RoutingTable) -> None:
    cache = TableCache("cp-1")
    with pytest.raises(InconsistentTableError):
        cache.set_table(table)
    assert cache.regions() == []


def test_only_watches_of_the_changed_region_with_another_version_are_woken() -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(3, "eu"))
        cache.set_table(make_table(1, "us"))
        eu_behind = cache.watch("eu", known_version=2)
        eu_current = cache.watch("eu", known_version=3)
        us = cache.watch("us", known_version=1)
        cache.set_table(make_table(3, "eu"))  # same version: nothing to wake
        assert not (eu_behind.notified or eu_current.notified or us.notified)
        cache.set_table(make_table(4, "eu"))
        assert eu_behind.notified and eu_current.notified and not us.notified
        assert (await eu_current.next()).version == 4
        assert eu_current.known_version == 4

    run(body())


def test_a_watch_returns_at_once_when_behind_and_waits_otherwise() -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        with cache.watch("eu") as watch:
            waiter = asyncio.create_task(watch.next())
            await asyncio.sleep(0.01)
            assert not waiter.done(), "no table for the region yet"
            cache.set_table(make_table(1))
            assert (await asyncio.wait_for(waiter, 1.0)).version == 1
            waiter = asyncio.create_task(watch.next())
            await asyncio.sleep(0.01)
            assert not waiter.done(), "already has version 1"
            cache.set_table(make_table(2))
            cache.set_table(make_table(3))
            assert (await asyncio.wait_for(waiter, 1.0)).version == 3, "only the newest is returned"
        assert cache.watch_count("eu") == 0

    run(body())


def record(router_id: str, acked_version: int, acked_at: float, nack: NackRecord | None = None,
           region: str = "eu") -> RouterRecord:
    return RouterRecord(router_id=router_id, region=region, url=f"http://{router_id}:8080",
                        replica_id="cp-1", acked_version=acked_version, acked_at=acked_at,
                        in_flight_version=None, last_nack=nack)


def test_router_statuses_report_ack_age_and_last_nack() -> None:
    cache = TableCache("cp-1")
    cache.record_router(1, record("r-1", 7, acked_at=100.0, nack=NackRecord(8, "model 'x' unknown", 105.0)))
    cache.record_router(2, record("r-2", 8, acked_at=104.0, region="us"))
    statuses = cache.router_statuses(now=110.0)
    assert [(s.router_id, s.acked_version, s.age_since_ack_s, s.connected) for s in statuses] == [
        ("r-1", 7, 10.0, True), ("r-2", 8, 6.0, True)]
    first = statuses[0]
    assert (first.url, first.replica_id, first.region) == ("http://r-1:8080", "cp-1", "eu")
    assert (first.last_nack_version, first.last_nack_reason) == (8, "model 'x' unknown")
    assert first.last_nack_age_s == 5.0
    assert (statuses[1].last_nack_version, statuses[1].last_nack_reason) == (None, "")


def test_a_reconnected_router_is_reported_once_and_old_disconnections_are_forgotten() -> None:
    cache = TableCache("cp-1", forget_disconnected_after_s=60.0)
    cache.record_router(1, record("r-1", 7, acked_at=100.0))
    cache.record_router(2, record("r-1", 7, acked_at=101.0))  # reconnected before the old stream ended
    cache.router_disconnected(1, now=102.0)
    assert [(s.router_id, s.connected) for s in cache.router_statuses(103.0)] == [("r-1", True)]
    cache.router_disconnected(2, now=110.0)
    assert [(s.router_id, s.connected) for s in cache.router_statuses(111.0)] == [("r-1", False)]
    cache.record_router(3, record("r-2", 1, acked_at=200.0))
    cache.router_disconnected(3, now=200.0)  # prunes r-1, gone for 90 s
    assert [s.router_id for s in cache.router_statuses(201.0)] == ["r-2"]
