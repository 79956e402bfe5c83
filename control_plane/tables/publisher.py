"""The leader's loop: every tick read the telemetry of all regions, merge it, compute every region's table and
publish those that changed materially, in one fenced transaction whose revision is their version. A new
policy document wakes the loop at once (without a Redis round trip), so a push reaches the routers in well
under a second rather than at the next tick.

The moment a write is refused (NotLeader) or etcd fails, the loop stops: a leader that cannot prove its
lease must not publish. It says so once, in the log and in `PublisherStatus` (shown by `meridian status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aetcd
from google.protobuf.message import DecodeError

from control_plane.config import ControlPlaneConfig
from control_plane.election.campaign import Election, NotLeader, PutOp
from control_plane.etcd_keys import EtcdKeys, decode_table, encode_table
from control_plane.policy.document import PolicyError, validate_policy_document
from control_plane.policy.store import PolicyStore
from control_plane.tables.compute import ComputeState, changed_materially, compute_tables
from control_plane.telemetry.merge import MergedStats, StatsKey, merge_samples
from control_plane.telemetry.reader import TelemetryReader
from meridian_common.logging_setup import event
from meridian_proto import policy_pb2, routing_pb2

log = logging.getLogger(__name__)

NOT_PUBLISHING = "cannot prove leadership: not publishing"
POLICY_REWATCH_S = 0.1
_ETCD_ERRORS = (aetcd.ClientError, TimeoutError, OSError)

ReaderFactory = Callable[[ControlPlaneConfig], TelemetryReader]


def tables_to_publish(
    published: Mapping[str, routing_pb2.RoutingTable], computed: Mapping[str, routing_pb2.RoutingTable], epoch: int
) -> dict[str, routing_pb2.RoutingTable]:
    """The computed tables worth a new version, stamped with the leader's epoch (version stays 0). A new
    leader republishes every region once, so routers and operators see at once who publishes now."""
    changed = {}
    for region, table in sorted(computed.items()):
        previous = published.get(region)
        if previous is None or previous.epoch != epoch or changed_materially(previous, table):
            stamped = routing_pb2.RoutingTable()
            stamped.CopyFrom(table)
            stamped.epoch = epoch
            stamped.version = 0
            changed[region] = stamped
    return changed


@dataclass(slots=True)
class PublisherStatus:
    """What this replica says about its publishing, for the status endpoint; mutated by the publisher only."""

    publishing: bool = False
    reason: str = "not the leader"
    last_version: int = 0
    last_published_unix_ms: int = 0
    policy_version: int = 0
    publications: dict[str, int] = field(default_factory=dict)

    def started(self) -> None:
        if not self.publishing:
            log.info(event("publishing_started"))
        self.publishing, self.reason = True, ""

    def stopped(self, reason: str, cause: str, *, level: int = logging.WARNING) -> None:
        # One line per stop, however many ticks or writes fail afterwards.
        if self.publishing:
            log.log(level, event("publishing_stopped", reason=reason, cause=cause))
        self.publishing, self.reason = False, reason


def default_reader(config: ControlPlaneConfig) -> TelemetryReader:
    return TelemetryReader(config.redis_url, sorted(config.regions), window_s=config.telemetry_window_s)


class TablePublisher:
    """Runs for one term of office: `await run()` returns when publishing had to stop."""

    def __init__(
        self,
        config: ControlPlaneConfig,
        election: Election,
        keys: EtcdKeys,
        status: PublisherStatus,
        *,
        reader_factory: ReaderFactory = default_reader,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._election = election
        self._client = election.session.client
        self._keys = keys
        self._status = status
        self._reader_factory = reader_factory
        self._clock = clock
        self._policy = policy_pb2.PolicyDocument()
        self._policy_changed = asyncio.Event()

    async def run(self) -> None:
        epoch = self._election.epoch
        if epoch is None or not self._election.is_leader:
            self._status.stopped(NOT_PUBLISHING, "not the leader")
            return
        reader = self._reader_factory(self._config)
        policy_task: asyncio.Task[None] | None = None
        try:
            published = await self._load_published()
            state = ComputeState.from_tables(published, self._clock())
            first_policy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            policy_task = asyncio.create_task(self._follow_policy(first_policy), name="policy-watch")
            await first_policy
            self._status.started()
            await self._loop(epoch, reader, published, state, policy_task)
        except NotLeader as error:
            self._status.stopped(NOT_PUBLISHING, error.reason)
        except (aetcd.ClientError, TimeoutError, OSError) as error:
            self._status.stopped(NOT_PUBLISHING, f"etcd: {type(error).__name__}")
        finally:
            if policy_task is not None:
                policy_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aetcd.ClientError, TimeoutError, OSError):
                    await policy_task
            await reader.close()

    async def _loop(
        self,
        epoch: int,
        reader: TelemetryReader,
        published: dict[str, routing_pb2.RoutingTable],
        state: ComputeState,
        policy_task: asyncio.Task[None],
    ) -> None:
        tick_s = self._config.tick_s
        next_tick = time.monotonic()
        stats: Mapping[StatsKey, MergedStats] = {}
        poll_telemetry = True
        while True:
            if policy_task.done():
                policy_task.result()  # re-raises the etcd error that broke the policy watch
            now = self._clock()
            if poll_telemetry:
                engine_since_unix_ms = round((now - self._config.compute.engine_max_age_s) * 1000)
                stats = merge_samples(await reader.poll(round(now * 1000)), engine_since_unix_ms=engine_since_unix_ms)
            tables, state = compute_tables(self._config, self._policy, stats, state, now)
            changed = tables_to_publish(published, tables, epoch)
            if changed:
                await self._publish(changed, published, now)
            next_tick = max(next_tick + tick_s, time.monotonic())
            self._policy_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._policy_changed.wait(), timeout=next_tick - time.monotonic())
            # A policy push recomputes on the telemetry already merged: no Redis round trip on that path.
            poll_telemetry = not self._policy_changed.is_set()

    async def _publish(
        self, changed: dict[str, routing_pb2.RoutingTable], published: dict[str, routing_pb2.RoutingTable],
        now: float,
    ) -> None:
        started = time.monotonic()
        revision = await self._election.fenced_txn(
            [PutOp(self._keys.table(region), encode_table(table)) for region, table in changed.items()]
        )
        for region, table in changed.items():
            table.version = revision
            published[region] = table
            self._status.publications[region] = self._status.publications.get(region, 0) + 1
        self._status.last_version = revision
        self._status.last_published_unix_ms = round(now * 1000)
        log.info(event("tables_published", version=revision, epoch=self._election.epoch,
                       regions=",".join(changed), policy_version=self._policy.version,
                       write_ms=round((time.monotonic() - started) * 1000, 1)))

    async def _load_published(self) -> dict[str, routing_pb2.RoutingTable]:
        """The tables in etcd, so that this term damps from its predecessor's weights and only publishes what
        it changes."""
        found = await self._client.get_prefix(self._keys.tables)
        tables = {}
        for kv in found:
            try:
                table = decode_table(kv.value, int(kv.mod_revision), int(found.header.cluster_id))
            except DecodeError:
                continue
            tables[self._keys.region_of(kv.key)] = table
        return tables

    async def _follow_policy(self, first: asyncio.Future[None]) -> None:
        """Follows the policy in force. Once the first document is in, a broken watch (the etcd client moved
        to another member) is watched again from a fresh read while this term lasts: it says nothing about
        leadership, which the session's deadline and the fenced writes decide."""
        store = PolicyStore(self._client, self._keys, versions_kept=self._config.policy_versions_kept)
        while True:
            try:
                async with contextlib.aclosing(store.observe()) as documents:
                    async for document in documents:
                        self._take_policy(document)
                        if not first.done():
                            first.set_result(None)
                        else:
                            self._policy_changed.set()
            except BaseException as error:
                if not first.done():
                    first.set_exception(error)
                    raise
                if not isinstance(error, _ETCD_ERRORS) or not self._election.is_leader:
                    raise
                log.warning(event("policy_watch_broken", error=type(error).__name__, action="watching again"))
            await asyncio.sleep(POLICY_REWATCH_S)

    def _take_policy(self, document: policy_pb2.PolicyDocument) -> None:
        try:
            validate_policy_document(document, self._config)
        except PolicyError as error:
            # Admins validate before writing; this catches a replica whose catalog differs from the writer's.
            log.error(event("policy_not_applicable", version=document.version, kept=self._policy.version,
                            problems=len(error.problems), first=error.problems[0]))
            return
        self._policy = document
        self._status.policy_version = document.version
        log.info(event("policy_loaded", version=document.version, author=document.author or "-",
                       entries=len(document.models)))
