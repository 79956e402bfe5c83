"""The versioned table of each region that the distribution server serves, with watches (go-control-plane's
SimpleCache shape, keyed by region), and the status of every subscribed router for `meridian status`.

Call it from the event loop's thread: watches are woken through asyncio events.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from control_plane.distribution.session import RouterRecord
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2


class StaleTableError(ValueError):
    """A table older than (or conflicting with) the one the cache holds for its region."""


class InconsistentTableError(ValueError):
    """A table that is not fit to be served: no region, or a content hash that does not match its models."""


@dataclass(frozen=True, slots=True)
class RouterStatus:
    router_id: str
    region: str
    url: str
    replica_id: str
    connected: bool
    acked_version: int
    age_since_ack_s: float
    in_flight_version: int | None
    last_nack_version: int | None
    last_nack_reason: str
    last_nack_age_s: float | None


@dataclass(slots=True)
class _RouterEntry:
    record: RouterRecord
    disconnected_at: float | None = None


class RegionWatch:
    """One subscriber's interest in a region: `next()` returns once the region's table differs from the
    version this watch last returned (or was created with). With `on_change`, the watch calls it instead (once
    until `poll()` is called), and `poll()` returns the table: the caller's own queue is then the watch's
    channel, with no task of its own per watch (go-control-plane's watch is a channel the stream selects on)."""

    def __init__(
        self, cache: TableCache, region: str, known_version: int | None, on_change: Callable[[], None] | None = None
    ) -> None:
        self.region = region
        self.known_version = known_version
        self._known_cluster_id: int | None = None  # None: a table of known_version in any cluster is known
        self._cache = cache
        self._event = asyncio.Event()
        self._on_change = on_change

    @property
    def notified(self) -> bool:
        return self._event.is_set()

    async def next(self) -> routing_pb2.RoutingTable:
        while True:
            table = self.poll()
            if table is not None:
                return table
            await self._event.wait()

    def poll(self) -> routing_pb2.RoutingTable | None:
        """The region's table if this watch has not returned it yet, else None; re-arms the watch."""
        self._event.clear()
        table = self._cache.get(self.region)
        if table is not None and not self._knows(table):
            self.known_version, self._known_cluster_id = table.version, table.cluster_id
            return table
        return None

    def close(self) -> None:
        self._cache._watches.get(self.region, set()).discard(self)

    def __enter__(self) -> RegionWatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _knows(self, table: routing_pb2.RoutingTable) -> bool:
        # Versions restart with a cluster: the same number from another one is another table.
        return table.version == self.known_version and self._known_cluster_id in (None, table.cluster_id)

    def _notify(self, table: routing_pb2.RoutingTable) -> None:
        if not self._knows(table) and not self._event.is_set():
            self._event.set()
            if self._on_change is not None:
                self._on_change()


class TableCache:
    """Tables by region. A stored table is shared with every reader: treat it as read-only."""

    def __init__(self, replica_id: str, *, forget_disconnected_after_s: float = 300.0) -> None:
        self.replica_id = replica_id
        self._forget_after_s = forget_disconnected_after_s
        self._tables: dict[str, routing_pb2.RoutingTable] = {}
        self._watches: dict[str, set[RegionWatch]] = {}
        self._routers: dict[int, _RouterEntry] = {}
        self._stream_ids = itertools.count(1)

    def set_table(self, table: routing_pb2.RoutingTable, *, newest: bool = False) -> bool:
        """Stores the region's new table and wakes its watches; False when it is the table already held.

        Versions compare within one etcd cluster: a table of another cluster replaces the cached one whatever its
        version. `newest=True` says the table was just read from etcd as the region's current one: it replaces
        a cached table of the same cluster with a higher version, one the cluster as it is never wrote (etcd
        restored from a backup)."""
        if not table.region:
            raise InconsistentTableError(f"table version {table.version} has no region")
        expected = content_hash(table.models)
        if table.content_hash != expected:
            raise InconsistentTableError(
                f"table version {table.version} of region {table.region!r}: content_hash "
                f"{table.content_hash!r} does not match its models ({expected!r})"
            )
        current = self._tables.get(table.region)
        if current is not None and current.cluster_id == table.cluster_id:
            if table.version < current.version and not newest:
                raise StaleTableError(
                    f"table version {table.version} of region {table.region!r} is older than the cached "
                    f"version {current.version}"
                )
            if table.version == current.version:
                if table.content_hash != current.content_hash:
                    raise StaleTableError(
                        f"table version {table.version} of region {table.region!r} differs from the cached "
                        "table of the same version"
                    )
                return False
        stored = routing_pb2.RoutingTable()
        stored.CopyFrom(table)
        self._tables[table.region] = stored
        for watch in self._watches.get(table.region, ()):
            watch._notify(stored)
        return True

    def get(self, region: str) -> routing_pb2.RoutingTable | None:
        return self._tables.get(region)

    def regions(self) -> list[str]:
        return sorted(self._tables)

    def watch(
        self, region: str, known_version: int | None = None, *, on_change: Callable[[], None] | None = None
    ) -> RegionWatch:
        """A watch on `region`; close it (or use it as a context manager) when the stream ends. `on_change` (called
        in `set_table`, so it must not block) replaces awaiting `next()`: see RegionWatch."""
        watch = RegionWatch(self, region, known_version, on_change)
        self._watches.setdefault(region, set()).add(watch)
        return watch

    def watch_count(self, region: str) -> int:
        return len(self._watches.get(region, ()))

    def new_stream_id(self) -> int:
        """Identifies one subscription stream: a router that reconnects gets a new one."""
        return next(self._stream_ids)

    def record_router(self, stream_id: int, record: RouterRecord) -> None:
        self._routers[stream_id] = _RouterEntry(record)

    def router_disconnected(self, stream_id: int, now: float) -> None:
        entry = self._routers.get(stream_id)
        if entry is not None:
            entry.disconnected_at = now
        # A router that moved to another stream (or replica) is reported by that one.
        self._routers = {
            sid: e
            for sid, e in self._routers.items()
            if e.disconnected_at is None or now - e.disconnected_at < self._forget_after_s
        }

    def router_statuses(self, now: float) -> list[RouterStatus]:
        """One line per router seen on this replica, connected first; `now` on the clock the servicer uses."""
        live: dict[str, RouterStatus] = {}
        for entry in sorted(self._routers.values(), key=lambda e: e.record.acked_at):
            record = entry.record
            connected = entry.disconnected_at is None
            if record.router_id in live and live[record.router_id].connected and not connected:
                continue
            nack = record.last_nack
            live[record.router_id] = RouterStatus(
                router_id=record.router_id,
                region=record.region,
                url=record.url,
                replica_id=record.replica_id,
                connected=connected,
                acked_version=record.acked_version,
                age_since_ack_s=max(0.0, now - record.acked_at),
                in_flight_version=record.in_flight_version,
                last_nack_version=nack.version if nack else None,
                last_nack_reason=nack.reason if nack else "",
                last_nack_age_s=max(0.0, now - nack.at) if nack and nack.at is not None else None,
            )
        return sorted(live.values(), key=lambda s: (not s.connected, s.region, s.router_id))
