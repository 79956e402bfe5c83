"""Every replica's view of the published tables: reads `<prefix>/tables/` from etcd, then watches it, and
feeds each table (its version set to the key's mod_revision, its cluster_id to that of the read) into the
TableCache the routers stream from. A follower therefore serves exactly what the leader wrote. When etcd breaks
the watch, the cache keeps its tables and the watch is re-established with backoff from a fresh read, so nothing
written meanwhile is lost; that read is the etcd as it is now, so it also replaces tables an etcd rebuilt or
restored from a backup no longer has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import aetcd
from aetcd import EventKind
from google.protobuf.message import DecodeError

from control_plane.distribution.table_cache import InconsistentTableError, StaleTableError, TableCache
from control_plane.etcd_client import EtcdClient
from control_plane.etcd_keys import EtcdKeys, decode_table
from meridian_common.logging_setup import event
from meridian_proto import routing_pb2

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 2.0
READ_NEWEST_TIMEOUT_S = 2.0


class TableFollower:
    """Follows the tables published in etcd into the replica's TableCache (one per replica, leader or not)."""

    def __init__(self, client: EtcdClient, keys: EtcdKeys, cache: TableCache) -> None:
        self._client = client
        self._keys = keys
        self._cache = cache
        self.connected = False
        self.last_error = ""

    async def run(self) -> None:
        """Until cancelled; never raises an etcd error."""
        failures = 0
        while True:
            try:
                await self._follow()
            except (aetcd.ClientError, TimeoutError, OSError) as error:
                self.last_error = type(error).__name__
                if self.connected or failures == 0:
                    log.warning(event("table_watch_broken", error=self.last_error,
                                      regions=",".join(self._cache.regions())))
                self.connected = False
                failures += 1
            else:
                failures = 0
            ceiling = min(RETRY_MAX_S, RETRY_INITIAL_S * 2 ** min(failures, 10))
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))

    async def read_newest(self, region: str) -> routing_pb2.RoutingTable | None:
        """The region's table as etcd holds it now (a linearizable read); None when there is none, or when etcd
        did not answer within READ_NEWEST_TIMEOUT_S (logged)."""
        key = self._keys.table(region)
        try:
            found = await asyncio.wait_for(self._client.get_range(key, key + b"\0"), READ_NEWEST_TIMEOUT_S)
            if not found:
                return None
            return decode_table(found[0].value, int(found[0].mod_revision), int(found.header.cluster_id))
        except (aetcd.ClientError, TimeoutError, OSError, DecodeError) as error:
            log.warning(event("table_read_failed", region=region, error=type(error).__name__))
            return None

    async def _follow(self) -> None:
        found = await self._client.get_prefix(self._keys.tables)
        # Watch events carry no header: the tables they bring come from the cluster this read reached (a
        # different etcd behind the same address breaks the watch, and the next round reads it anew).
        cluster_id = int(found.header.cluster_id)
        for kv in found:
            self._accept(kv.key, kv.value, int(kv.mod_revision), cluster_id, newest=True)
        start = int(found.header.revision) + 1
        watch = await self._client.watch_prefix(self._keys.tables, start_revision=start, kind=EventKind.PUT)
        if not self.connected:
            log.info(event("table_watch_started", revision=start - 1, regions=",".join(self._cache.regions())))
        self.connected = True
        self.last_error = ""
        try:
            async for change in watch:
                self._accept(change.kv.key, change.kv.value, int(change.kv.mod_revision), cluster_id)
        finally:
            with contextlib.suppress(aetcd.ClientError):
                await watch.cancel()

    def _accept(self, key: bytes, value: bytes, mod_revision: int, cluster_id: int, *, newest: bool = False) -> None:
        region = self._keys.region_of(key)
        try:
            table = decode_table(value, mod_revision, cluster_id)
            if table.region != region:
                raise InconsistentTableError(f"key names region {region!r} but the table is for {table.region!r}")
            previous = self._cache.get(region)
            if self._cache.set_table(table, newest=newest):
                log.info(event("table_cached", region=region, version=table.version, epoch=table.epoch,
                               cluster=f"{cluster_id:x}"))
                if previous is not None and previous.cluster_id != cluster_id:
                    log.warning(event("table_cluster_changed", region=region, old_cluster=f"{previous.cluster_id:x}",
                                      new_cluster=f"{cluster_id:x}", held_version=previous.version,
                                      version=table.version))
                elif previous is not None and table.version < previous.version:
                    log.warning(event("table_history_rewound", region=region, cluster=f"{cluster_id:x}",
                                      held_version=previous.version, version=table.version))
        except StaleTableError as error:
            log.info(event("table_ignored", region=region, version=mod_revision, reason=str(error)))
        except (DecodeError, InconsistentTableError) as error:
            log.error(event("table_refused", region=region, version=mod_revision, reason=str(error)))
