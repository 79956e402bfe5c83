"""A replica's presence in etcd: its registration (`<prefix>/replicas/<id>`) and the routers connected to it
(`<prefix>/routers/<id>`), both on the replica's session lease so that they vanish with it. The router list
is rewritten only when it changes materially, checked every ROUTER_SYNC_S: every write is a revision etcd keeps
until it compacts, with the whole list in it.
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
# An ACK time alone (a router that reconnected holding the same version) is not worth a write: readers show
# the age since an ACK of the version the list names either way.
_NOT_MATERIAL = frozenset({"acked_at_unix_ms"})

RouterEntry = dict[str, object]


def material(entries: list[RouterEntry]) -> list[RouterEntry]:
    """What a write of the router list is for: which routers are connected, holding which version, refusing
    what."""
    return [{key: value for key, value in entry.items() if key not in _NOT_MATERIAL} for entry in entries]


class ReplicaRegistry:
    def __init__(
        self, keys: EtcdKeys, record: ReplicaRecord, cache: TableCache, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._keys = keys
        self._record = record
        self._cache = cache
        self._clock = clock

    def local_routers(self) -> list[RouterEntry]:
        now = self._clock()
        return router_entries(self._cache.router_statuses(now), now)

    async def register(self, session: LeaseSession) -> None:
        await session.client.put(self._keys.replica(self._record.id), self._record.encode(), lease=session.lease_id)
        log.info(event("replica_registered", replica=self._record.id, lease=f"{session.lease_id:x}",
                       admin=self._record.admin, grpc=self._record.grpc))

    async def sync_routers(self, session: LeaseSession) -> None:
        """Keeps the router list in etcd current until the session ends; a failed write is tried again at the
        next check (the client may have moved to another etcd member meanwhile)."""
        written: list[RouterEntry] | None = None
        while not session.done.is_set():
            entries = self.local_routers()
            if written is None or material(entries) != written:
                value = json.dumps(entries, sort_keys=True).encode()
                try:
                    await session.client.put(self._keys.routers_of(self._record.id), value, lease=session.lease_id)
                except (aetcd.ClientError, TimeoutError, OSError) as error:
                    log.warning(event("router_status_write_failed", replica=self._record.id,
                                      error=type(error).__name__))
                else:
                    written = material(entries)
            try:
                await asyncio.wait_for(session.done.wait(), timeout=ROUTER_SYNC_S)
            except TimeoutError:
                pass
