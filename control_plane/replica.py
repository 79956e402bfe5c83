"""One control-plane replica: serves the tables over gRPC and the admin API from the start, follows the
tables in etcd, and campaigns for leadership; while it leads, it runs the table publisher.

    config -> etcd client -> table watch (every replica) -> distribution gRPC, admin gRPC + HTTP
           -> loop: lease session -> register -> campaign -> publish until leadership is lost -> campaign

etcd unreachable at start or later: the servers keep serving the tables held (none at first), the loop
retries with backoff, and a leader stops publishing. On shutdown (SIGTERM) a leader resigns first, so a
follower takes over within a round trip, then the servers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aetcd
import grpc
from aiohttp import web

from control_plane.admin.cluster_status import LocalView, gather_status
from control_plane.admin.grpc_api import start_admin_grpc_server
from control_plane.admin.http_api import create_admin_app
from control_plane.admin.service import AdminService
from control_plane.config import ControlPlaneConfig
from control_plane.distribution.server import ServerTlsSettings, start_distribution_server
from control_plane.distribution.table_cache import TableCache
from control_plane.distribution.table_follower import TableFollower
from control_plane.election.campaign import Election, NotLeader
from control_plane.election.identity import CandidateIdentity
from control_plane.election.lease_session import LeaseSession, SessionLost
from control_plane.election.machine import Role
from control_plane.etcd_client import EtcdClusterClient, EtcdEndpointError
from control_plane.etcd_keys import EtcdKeys, ReplicaRecord
from control_plane.metrics import ReplicaFigures, replica_metrics
from control_plane.policy.store import PolicyStore
from control_plane.replica_registry import ReplicaRegistry
from control_plane.tables.publisher import (
    NOT_PUBLISHING,
    PublisherStatus,
    ReaderFactory,
    TablePublisher,
    default_reader,
)
from meridian_common.aiohttp_serving import announce_port
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 2.0
SHUTDOWN_STEP_S = 1.0
_ETCD_ERRORS = (aetcd.ClientError, TimeoutError, OSError)


class ReplicaStartError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class ListenPorts:
    """Command-line overrides of the config's ports (0 = any free port)."""

    grpc: int | None = None
    admin: int | None = None
    admin_grpc: int | None = None


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    grpc: str
    admin: str
    admin_grpc: str

    def as_dict(self) -> dict[str, str]:
        return {"grpc": self.grpc, "admin": self.admin, "admin_grpc": self.admin_grpc}


def write_ports_file(path: Path, addresses: BoundAddresses, ports: dict[str, int]) -> None:
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(json.dumps({**ports, "addresses": addresses.as_dict()}, sort_keys=True))
    partial.replace(path)


def _backoff_s(failures: int) -> float:
    ceiling = min(RETRY_MAX_S, RETRY_INITIAL_S * 2 ** min(failures, 10))
    return random.uniform(ceiling / 2, ceiling)


class Replica:
    def __init__(
        self,
        config: ControlPlaneConfig,
        *,
        replica_id: str,
        token: str | None,
        ports: ListenPorts = ListenPorts(),
        reader_factory: ReaderFactory = default_reader,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.replica_id = replica_id
        self.keys = EtcdKeys(config.etcd.prefix)
        self.cache = TableCache(replica_id)
        self.publisher_status = PublisherStatus()
        self._token = token
        self._ports = ports
        self._reader_factory = reader_factory
        self._clock = clock
        try:
            self.client = EtcdClusterClient(config.etcd.endpoints, timeout_s=config.etcd.call_timeout_s)
        except EtcdEndpointError as error:
            raise ReplicaStartError(str(error)) from error
        self.follower = TableFollower(self.client, self.keys, self.cache)
        self.election: Election | None = None
        self.addresses: BoundAddresses | None = None
        self._registry: ReplicaRegistry | None = None
        self._stopping = False
        self._started_at_ms = 0

    # --- what the admin API and /health report -----------------------------------------------------------

    def role(self) -> str:
        election = self.election
        if election is None or election.role is Role.LOST:
            return "no-quorum" if not self.follower.connected else "follower"
        if election.role is Role.LEADER:
            return "leader" if election.is_leader else "no-quorum"
        # A candidate waits for the leader key to go: to an operator, that is a follower.
        return "follower"

    def health(self) -> dict[str, Any]:
        addresses = self.addresses.as_dict() if self.addresses is not None else {}
        return {"status": "ok", "id": self.replica_id, "pid": os.getpid(), "role": self.role(),
                "publishing": self.publisher_status.publishing, "etcd_connected": self.follower.connected,
                "etcd_endpoint": self.client.endpoint,
                "regions": self.cache.regions(), **addresses}

    def figures(self) -> ReplicaFigures:
        tables = {r: t for r in self.cache.regions() if (t := self.cache.get(r)) is not None}
        return ReplicaFigures(self.replica_id, self.role() == "leader", tables,
                              dict(self.publisher_status.publications))

    async def status(self) -> dict[str, Any]:
        assert self._registry is not None and self.addresses is not None
        tables = [t for r in self.cache.regions() if (t := self.cache.get(r)) is not None]
        status = self.publisher_status
        local = LocalView(self._record(), self.role(), status.publishing, status.reason, status.policy_version)
        return await gather_status(self.client, self.keys, tables, self._registry.local_routers(), local,
                                   self._clock())

    def _record(self) -> ReplicaRecord:
        assert self.addresses is not None
        return ReplicaRecord(self.replica_id, os.getpid(), self.addresses.admin, self.addresses.grpc,
                             self.addresses.admin_grpc, self._started_at_ms)

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def run(self, *, port_file: Path | None = None, ports_file: Path | None = None,
                  ready: asyncio.Event | None = None) -> None:
        """Serves until cancelled. `port_file` gets the admin HTTP port (where /health is), like every
        Meridian server; `ports_file` gets JSON with every bound port and address."""
        self._started_at_ms = round(self._clock() * 1000)
        config = self.config
        tls = config.tls
        distribution_tls = admin_grpc_tls = None
        ssl_context = None
        if tls.enabled:
            assert tls.cert_file is not None and tls.key_file is not None
            client_ca = tls.ca_file if tls.require_client_cert else None
            distribution_tls = ServerTlsSettings.from_files(tls.cert_file, tls.key_file, client_ca)
            admin_grpc_tls = ServerTlsSettings.from_files(tls.cert_file, tls.key_file)
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(tls.cert_file, tls.key_file)
        if not self._token:
            log.warning(event("admin_token_missing", token_env=config.admin.token_env or "-",
                              effect="every admin request is refused"))

        servers: list[grpc.aio.Server] = []
        runner: web.AppRunner | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            grpc_server, grpc_port = await start_distribution_server(
                self.cache, config.grpc.host, _port(self._ports.grpc, config.grpc.port), tls=distribution_tls,
                read_newest=self.follower.read_newest)
            servers.append(grpc_server)
            store = PolicyStore(self.client, self.keys, versions_kept=config.policy_versions_kept)
            service = AdminService(config, store, self.cache, self.status, clock=self._clock)
            admin_grpc_server, admin_grpc_port = await start_admin_grpc_server(
                service, self.cache, config.admin.host, _port(self._ports.admin_grpc, config.admin.grpc_port),
                token=self._token, tls=admin_grpc_tls)
            servers.append(admin_grpc_server)
            runner = web.AppRunner(create_admin_app(service, token=self._token, health=self.health,
                                                    metrics_text=replica_metrics(self.figures)),
                                   access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            site = web.TCPSite(runner, config.admin.host, _port(self._ports.admin, config.admin.port),
                               ssl_context=ssl_context)
            await site.start()
            admin_port = int(runner.addresses[0][1])
            scheme = "https" if ssl_context is not None else "http"
            self.addresses = BoundAddresses(grpc=f"{config.grpc.host}:{grpc_port}",
                                            admin=f"{scheme}://{config.admin.host}:{admin_port}",
                                            admin_grpc=f"{config.admin.host}:{admin_grpc_port}")
            self._registry = ReplicaRegistry(self.keys, self._record(), self.cache, clock=self._clock)
            log.info(event("replica_started", replica=self.replica_id, grpc=self.addresses.grpc,
                           admin=self.addresses.admin, admin_grpc=self.addresses.admin_grpc, tls=tls.enabled,
                           mutual_tls=tls.require_client_cert, etcd=",".join(config.etcd.endpoints),
                           prefix=config.etcd.prefix))
            tasks.append(asyncio.create_task(self.follower.run(), name="table-follower"))
            tasks.append(asyncio.create_task(self._elections(), name="elections"))
            if ports_file is not None:
                write_ports_file(ports_file, self.addresses,
                                 {"grpc": grpc_port, "admin": admin_port, "admin_grpc": admin_grpc_port})
            announce_port(port_file, admin_port)
            if ready is not None:
                ready.set()
            # wait(), not gather(): on SIGTERM this task is cancelled, and the children must keep running
            # until _shutdown has resigned.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await self._shutdown(tasks, servers, runner)

    async def _shutdown(self, tasks: list[asyncio.Task[None]], servers: list[grpc.aio.Server],
                        runner: web.AppRunner | None) -> None:
        self._stopping = True
        election = self.election
        if election is not None and election.role is Role.LEADER:
            # First, before anything else stops: a follower takes over as soon as the key is gone.
            with contextlib.suppress(*_ETCD_ERRORS):
                await asyncio.wait_for(election.resign(revoke_lease=False), SHUTDOWN_STEP_S)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, *_ETCD_ERRORS):
                await task
        for server in servers:
            await server.stop(0.5)
        if runner is not None:
            await runner.cleanup()
        with contextlib.suppress(*_ETCD_ERRORS):
            await asyncio.wait_for(self.client.close(), SHUTDOWN_STEP_S)
        log.info(event("replica_stopped", replica=self.replica_id))

    async def _elections(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                session = await asyncio.wait_for(
                    LeaseSession.open(self.client, max(1, round(self.config.lease_ttl_s))),
                    self.config.etcd.call_timeout_s * 2)
            except _ETCD_ERRORS as error:
                if failures == 0:
                    log.warning(event("etcd_unreachable", endpoint=self.client.endpoint,
                                      error=type(error).__name__, action="serving the tables held; retrying"))
                self.publisher_status.stopped(f"{NOT_PUBLISHING} (etcd unreachable)", type(error).__name__)
                failures += 1
                await asyncio.sleep(_backoff_s(failures))
                continue
            if failures:
                log.info(event("etcd_reachable", endpoint=self.client.endpoint, after_failures=failures))
            failures = 0
            await self._with_session(session)

    async def _with_session(self, session: LeaseSession) -> None:
        assert self._registry is not None
        identity = CandidateIdentity(self.replica_id, os.getpid(), self._record().admin, self._record().grpc)
        election = Election(session, self.config.etcd.prefix, identity.encode())
        self.election = election
        sync: asyncio.Task[None] | None = None
        try:
            await self._registry.register(session)
            sync = asyncio.create_task(self._registry.sync_routers(session), name="router-status")
            while not session.done.is_set() and not self._stopping:
                try:
                    await election.campaign()
                except SessionLost:
                    break
                except (*_ETCD_ERRORS, NotLeader) as error:
                    log.warning(event("campaign_failed", replica=self.replica_id, error=type(error).__name__))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(session.done.wait(), _backoff_s(1))
                    continue
                await self._lead(election, session)
        except _ETCD_ERRORS as error:
            log.warning(event("replica_session_failed", replica=self.replica_id, error=type(error).__name__))
        finally:
            if sync is not None:
                sync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sync
            await election.close()
            if session.done.is_set():
                session.orphan()
            else:
                # Revoking also removes our registration and router list at once.
                with contextlib.suppress(*_ETCD_ERRORS):
                    await asyncio.wait_for(session.close(), SHUTDOWN_STEP_S)

    async def _lead(self, election: Election, session: LeaseSession) -> None:
        while election.is_leader and not self._stopping:
            publisher = TablePublisher(self.config, election, self.keys, self.publisher_status,
                                       reader_factory=self._reader_factory, clock=self._clock)
            publishing = asyncio.create_task(publisher.run(), name="table-publisher")
            lost = asyncio.create_task(election.wait_not_leader(), name="leadership")
            try:
                await asyncio.wait({publishing, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (publishing, lost):
                    task.cancel()
            outcome, _ = await asyncio.gather(publishing, lost, return_exceptions=True)
            if isinstance(outcome, Exception):
                # A bug in a tick must not end the replica: say so, stop publishing, and try again.
                log.error(event("publisher_failed", replica=self.replica_id, error=repr(outcome)))
                self.publisher_status.stopped(NOT_PUBLISHING, f"publisher failed: {type(outcome).__name__}")
            if self._stopping:
                self.publisher_status.stopped("resigned: shutting down", "SIGTERM", level=logging.INFO)
                return
            if not election.is_leader:
                cause = session.done_reason if session.done.is_set() else election.role.value
                self.publisher_status.stopped(NOT_PUBLISHING, f"leadership ended ({cause})")
                return
            # Still leading but a write failed: etcd hiccup. Retry shortly; the session's deadline decides.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.done.wait(), _backoff_s(1))


def _port(override: int | None, configured: int) -> int:
    return configured if override is None else override
