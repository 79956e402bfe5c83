"""EtcdClusterClient against a real 3-member cluster: a read through a member that was just SIGKILLed is
answered by the next member, a watch through it raises (its owner watches again), and a write fails once
and then goes to the new member."""

from __future__ import annotations

import asyncio

import aetcd
import pytest

from control_plane.etcd_client import EtcdClusterClient, EtcdEndpointError
from fixtures.services import wait_for_etcd_quorum
from regions.local_services import EtcdMember, RunningService

pytestmark = pytest.mark.integration


def test_the_client_moves_to_the_next_member(etcd_cluster: list[tuple[EtcdMember, RunningService]]) -> None:
    endpoints = tuple(member.client_url for member, _ in etcd_cluster)

    async def scenario() -> None:
        client = EtcdClusterClient(endpoints, timeout_s=1)
        try:
            await client.put(b"/k", b"v1")
            watch = await client.watch(b"/k")
            assert client.endpoint == endpoints[0]
            etcd_cluster[0][1].kill()
            with pytest.raises(aetcd.ConnectionFailedError):
                async for _ in watch:
                    pass
            # A read needs a raft leader: if the killed member led, the next one answers once one is elected.
            await asyncio.to_thread(wait_for_etcd_quorum, endpoints[1:])
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
