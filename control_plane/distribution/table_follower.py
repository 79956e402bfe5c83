"""Every replica's view of the published tables: reads `<prefix>/tables/` from etcd, then watches it, and
feeds each table (its version set to the key's mod_revision) into the TableCache the routers stream from.
A follower therefore serves exactly what the leader wrote. When etcd breaks the watch, the cache keeps its
tables and the watch is re-established with backoff from a fresh read, so nothing written meanwhile is lost.
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
from control_plane.etcd_keys import EtcdKeys, decode_table
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 2.0


class TableFollower:
    """Follows the tables published in etcd into the replica's TableCache (one per replica, leader or not)."""

    def __init__(self, client: aetcd.Client, keys: EtcdKeys, cache: TableCache) -> None:
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

    async def _follow(self) -> None:
        found = await self._client.get_prefix(self._keys.tables)
        for kv in found:
            self._accept(kv.key, kv.value, int(kv.mod_revision))
        start = int(found.header.revision) + 1
        watch = await self._client.watch_prefix(self._keys.tables, start_revision=start, kind=EventKind.PUT)
        if not self.connected:
            log.info(event("table_watch_started", revision=start - 1, regions=",".join(self._cache.regions())))
        self.connected = True
        self.last_error = ""
        try:
            async for change in watch:
                self._accept(change.kv.key, change.kv.value, int(change.kv.mod_revision))
        finally:
            with contextlib.suppress(aetcd.ClientError):
                await watch.cancel()

    def _accept(self, key: bytes, value: bytes, mod_revision: int) -> None:
        region = self._keys.region_of(key)
        try:
            table = decode_table(value, mod_revision)
            if table.region != region:
                raise InconsistentTableError(f"key names region {region!r} but the table is for {table.region!r}")
            if self._cache.set_table(table):
                log.info(event("table_cached", region=region, version=table.version, epoch=table.epoch))
        except StaleTableError as error:
            log.info(event("table_ignored", region=region, version=mod_revision, reason=str(error)))
        except (DecodeError, InconsistentTableError) as error:
            log.error(event("table_refused", region=region, version=mod_revision, reason=str(error)))
