"""A replica's presence in etcd: its registration (`<prefix>/replicas/<id>`) and the routers connected to it
(`<prefix>/routers/<id>`), both on the replica's session lease so that they vanish with it. The router list
is rewritten only when it changes, checked every ROUTER_SYNC_S.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import aetcd

from control_plane.admin.cluster_status import router_entries
from control_plane.distribution.table_cache import TableCache
from control_plane.election.lease_session import LeaseSession
from control_plane.etcd_keys import EtcdKeys, ReplicaRecord
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

ROUTER_SYNC_S = 1.0


class ReplicaRegistry:
    def __init__(
        self, keys: EtcdKeys, record: ReplicaRecord, cache: TableCache, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._keys = keys
        self._record = record
        self._cache = cache
        self._clock = clock

    def local_routers(self) -> list[dict[str, object]]:
        now = self._clock()
        return router_entries(self._cache.router_statuses(now), now)

    async def register(self, session: LeaseSession) -> None:
        await session.client.put(self._keys.replica(self._record.id), self._record.encode(), lease=session.lease_id)
        log.info(event("replica_registered", replica=self._record.id, lease=f"{session.lease_id:x}",
                       admin=self._record.admin, grpc=self._record.grpc))

    async def sync_routers(self, session: LeaseSession) -> None:
        """Keeps the router list in etcd current until the session ends or an etcd call fails."""
        written: bytes | None = None
        while not session.done.is_set():
            entries = self.local_routers()
            # The age is derived from acked_at by the reader, so an unchanged list is not rewritten.
            value = json.dumps(entries, sort_keys=True).encode()
            if value != written:
                try:
                    await session.client.put(self._keys.routers_of(self._record.id), value, lease=session.lease_id)
                except (aetcd.ClientError, TimeoutError, OSError) as error:
                    log.warning(event("router_status_write_failed", replica=self._record.id,
                                      error=type(error).__name__))
                    return
                written = value
            try:
                await asyncio.wait_for(session.done.wait(), timeout=ROUTER_SYNC_S)
            except TimeoutError:
                pass
