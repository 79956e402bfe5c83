"""EtcdClusterClient against a real 3-member cluster: a read through a member that was just SIGKILLed is
answered by the next member, a watch through it raises (its owner watches again), and a write fails once
and then goes to the new member."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aetcd
import pytest

from control_plane.etcd_client import EtcdClusterClient, EtcdEndpointError
from regions.local_services import EtcdMember, RunningService, start_etcd_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[tuple[EtcdMember, RunningService]]]:
    members = start_etcd_cluster(3, tmp_path / "data", tmp_path / "logs")
    try:
        yield members
    finally:
        for _, service in members:
            service.stop()


def test_the_client_moves_to_the_next_member(cluster: list[tuple[EtcdMember, RunningService]]) -> None:
    endpoints = tuple(member.client_url for member, _ in cluster)

    async def scenario() -> None:
        client = EtcdClusterClient(endpoints, timeout_s=1)
        try:
            await client.put(b"/k", b"v1")
            watch = await client.watch(b"/k")
            assert client.endpoint == endpoints[0]
            cluster[0][1].kill()
            with pytest.raises(aetcd.ConnectionFailedError):
                async for _ in watch:
                    pass
            found = await client.get_range(b"/k", b"/k\0")
            assert found[0].value == b"v1" and client.endpoint == endpoints[1]
            await client.put(b"/k", b"v2")
            assert (await client.get(b"/k")).value == b"v2"
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


@pytest.mark.parametrize("endpoint", ["https://127.0.0.1:2379", "127.0.0.1:2379"])
def test_endpoints_it_cannot_use_are_refused(endpoint: str) -> None:
    with pytest.raises(EtcdEndpointError, match="http://"):
        EtcdClusterClient((endpoint,), timeout_s=1)
