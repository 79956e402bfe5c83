"""TableFollower against a real etcd: tables reach the cache with the version and the cluster of the read, and a
cached table the etcd as it is never wrote (restored from a backup, or another cluster) gives way to etcd's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd
import pytest
from replica_fixtures import new_prefix

from control_plane.distribution.table_cache import TableCache
from control_plane.distribution.table_follower import TableFollower
from control_plane.etcd_keys import EtcdKeys, encode_table
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2
from regions.local_services import RunningService

pytestmark = pytest.mark.integration

HUGE = 2**62


def make_table(region: str = "eu-west", model: str = "m") -> routing_pb2.RoutingTable:
    models = [routing_pb2.ModelRoute(model=model, policy="latency-first")]
    return routing_pb2.RoutingTable(epoch=1, region=region, models=models, content_hash=content_hash(models),
                                    source="control-plane")


def with_follower(etcd: RunningService,
                  body: Callable[[TableFollower, TableCache, aetcd.Client, EtcdKeys], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
            keys, cache = EtcdKeys(new_prefix()), TableCache("cp-test")
            return await body(TableFollower(client, keys, cache), cache, client, keys)

    return asyncio.run(asyncio.wait_for(run(), 15))


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(250):  # 5 s
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within 5 s: {what}")


def test_read_newest_gives_the_version_and_cluster_of_the_read(etcd: RunningService) -> None:
    async def body(follower: TableFollower, cache: TableCache, client: aetcd.Client, keys: EtcdKeys) -> None:
        assert await follower.read_newest("eu-west") is None
        put = await client.put(keys.table("eu-west"), encode_table(make_table()))
        newest = await follower.read_newest("eu-west")
        assert newest is not None
        assert (newest.version, newest.cluster_id) == (put.header.revision, put.header.cluster_id)
        assert newest.cluster_id != 0

    with_follower(etcd, body)


@pytest.mark.parametrize(("cached_cluster", "said"), [("same", "table_history_rewound"),
                                                      ("other", "table_cluster_changed")])
def test_a_cached_table_etcd_never_wrote_gives_way(
    etcd: RunningService, caplog: pytest.LogCaptureFixture, cached_cluster: str, said: str
) -> None:
    async def body(follower: TableFollower, cache: TableCache, client: aetcd.Client, keys: EtcdKeys) -> None:
        put = await client.put(keys.table("eu-west"), encode_table(make_table()))
        stale = make_table(model="from-before")
        stale.version = HUGE
        stale.cluster_id = put.header.cluster_id if cached_cluster == "same" else put.header.cluster_id ^ 0xFFFF
        cache.set_table(stale)
        task = asyncio.create_task(follower.run())
        try:
            await until(lambda: (t := cache.get("eu-west")) is not None and t.version == put.header.revision,
                        "etcd's table in the cache")
            table = cache.get("eu-west")
            assert table is not None and table.cluster_id == put.header.cluster_id
            assert table.models[0].model == "m"
            later = await client.put(keys.table("eu-west"), encode_table(make_table(model="next")))
            await until(lambda: (t := cache.get("eu-west")) is not None and t.version == later.header.revision,
                        "the next table through the watch")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.INFO, logger="control_plane.distribution.table_follower"):
        with_follower(etcd, body)
    lines = [r.getMessage() for r in caplog.records if said in r.getMessage()]
    assert len(lines) == 1 and f"held_version={HUGE}" in lines[0], caplog.text
