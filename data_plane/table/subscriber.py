"""The router's table subscription: a background task that keeps one stream open to a control-plane replica,
answers every table through TableSyncSession, and reconnects with full-jitter backoff across the replicas.

Nothing here is on the request path: tables reach the router only through the `apply` callback.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from data_plane.table.store import TableStore
from data_plane.table.sync import RULES, HeldTable, Outcome, RouterIdentity, SyncState, TableSyncSession, Validate
from meridian_common.logging_setup import event
from meridian_common.table_distribution import REPLICA_METADATA_KEY
from meridian_proto import distribution_pb2, distribution_pb2_grpc, routing_pb2

log = logging.getLogger(__name__)

Apply = Callable[[routing_pb2.RoutingTable], None]

# The distribution server sends this in its initial metadata; its arrival means the stream is up.

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    # Pings notice a replica that vanished without closing the connection (host down, partition).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True, slots=True)
class ClientTlsSettings:
    """PEM bytes of the CA that signs the control plane's certificate, and optionally the router's own
    certificate and key for mutual TLS. `server_name` overrides the name checked in the server certificate."""

    ca_pem: bytes
    cert_chain_pem: bytes | None = None
    private_key_pem: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    @classmethod
    def from_files(
        cls,
        ca_path: str | Path,
        cert_path: str | Path | None = None,
        key_path: str | Path | None = None,
        server_name: str | None = None,
    ) -> ClientTlsSettings:
        if (cert_path is None) != (key_path is None):
            raise ValueError("tls: cert_path and key_path go together (mutual TLS needs both)")
        return cls(
            ca_pem=Path(ca_path).read_bytes(),
            cert_chain_pem=Path(cert_path).read_bytes() if cert_path is not None else None,
            private_key_pem=Path(key_path).read_bytes() if key_path is not None else None,
            server_name=server_name,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.private_key_pem,
            certificate_chain=self.cert_chain_pem,
        )


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff: failure n in a row waits uniform(0, min(max, initial * 2**n))."""

    initial_s: float = 0.1
    # A retry is one TCP connect; a short ceiling re-syncs routers within ~2 s of the control plane's return.
    max_s: float = 2.0
    multiplier: float = 2.0

    def delay_s(self, failures: int, draw: Callable[[], float]) -> float:
        ceiling = min(self.max_s, self.initial_s * self.multiplier ** min(failures, 64))
        return draw() * ceiling


@dataclass(frozen=True, slots=True)
class SubscriberStatus:
    link: str  # "starting", "connected", "retrying", "unreachable", "closed"
    target: str | None
    replica_id: str | None
    held_version: int
    last_nack_version: int | None
    last_nack_reason: str


class _StreamEnded(Exception):
    """The stream ended; the message says why (for the one log line per state change)."""


class TableSubscriber:
    """Start with `async with subscriber:` (or run `run()` as a task); `close()` stops it."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        router_id: str,
        region: str,
        url: str,
        initial: routing_pb2.RoutingTable,
        validate: Validate,
        apply: Apply,
        store: TableStore | None = None,
        tls: ClientTlsSettings | None = None,
        backoff: Backoff = Backoff(),
        connect_timeout_s: float = 5.0,
        rng: random.Random | None = None,
        channel_options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        if not targets:
            raise ValueError("table subscriber: at least one control-plane target is needed")
        self._targets = list(targets)
        identity = RouterIdentity(router_id, region, url)
        self._session = TableSyncSession(identity, HeldTable.of(initial), validate)
        self._apply = apply
        self._store = store
        self._credentials = tls.credentials() if tls is not None else None
        # Extra gRPC channel arguments: the propagation bench gives each of its in-process subscribers a
        # connection of its own (`grpc.use_local_subchannel_pool`), as separate router processes have.
        self._options = [*CHANNEL_OPTIONS, *channel_options]
        if tls is not None and tls.server_name:
            self._options.append(("grpc.ssl_target_name_override", tls.server_name))
        self._backoff = backoff
        self._connect_timeout_s = connect_timeout_s
        self._rng = rng or random.Random()
        self._link = "starting"
        self._target: str | None = None
        self._replica_id: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[object] | None = None

    def status(self) -> SubscriberStatus:
        nack = self._session.last_nack
        return SubscriberStatus(
            link=self._link,
            target=self._target if self._link == "connected" else None,
            replica_id=self._replica_id if self._link == "connected" else None,
            held_version=self._session.held.version,
            last_nack_version=nack.version if nack else None,
            last_nack_reason=nack.reason if nack else "",
        )

    async def run(self) -> None:
        """Subscribes until cancelled or closed; never raises otherwise."""
        self._runner = asyncio.current_task()
        failures = 0
        index = 0
        try:
            while True:
                target = self._targets[index % len(self._targets)]
                index += 1
                connected = await self._attempt(target)
                failures = 0 if connected else failures + 1
                if failures >= len(self._targets) and self._link != "unreachable":
                    self._set_link("unreachable", targets=",".join(self._targets))
                await asyncio.sleep(self._backoff.delay_s(failures, self._rng.random))
        finally:
            self._link = "closed"

    async def close(self) -> None:
        for task in (self._task, self._runner):
            if task is not None and task is not asyncio.current_task() and not task.done():
                task.cancel()
                await asyncio.wait([task])

    async def __aenter__(self) -> TableSubscriber:
        self._task = asyncio.create_task(self.run(), name="table-subscriber")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _attempt(self, target: str) -> bool:
        """One stream to `target`; True when it came up (whatever ended it later)."""
        connected = False
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(target, self._credentials, options=self._options)
        else:
            channel = grpc.aio.insecure_channel(target, options=self._options)
        call = None
        try:
            call = distribution_pb2_grpc.TableDistributionStub(channel).Subscribe()
            await call.write(self._session.connect())
            metadata = await asyncio.wait_for(call.initial_metadata(), self._connect_timeout_s)
            replica = dict(metadata or ()).get(REPLICA_METADATA_KEY)
            if replica is None:
                raise _StreamEnded(await _call_error(call, self._connect_timeout_s))
            connected = True
            self._target, self._replica_id = target, str(replica)
            self._set_link("connected", target=target, replica=replica,
                           held_version=self._session.held.version)
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise _StreamEnded(await _call_error(call, self._connect_timeout_s))
                await self._answer(call, response)
        except _StreamEnded as ended:
            reason = str(ended)
        except grpc.aio.AioRpcError as error:
            reason = f"{error.code().name}: {error.details()}"
        except asyncio.InvalidStateError:
            # Writing to a call the server has just ended; its status says why.
            reason = await _call_error(call, self._connect_timeout_s) if call is not None else "call ended"
        except TimeoutError:
            reason = f"no answer within {self._connect_timeout_s}s"
        except Exception as error:  # the subscription must outlive any bug in one attempt
            log.exception(event("table_subscriber_error", target=target))
            reason = f"{type(error).__name__}: {error}"
        finally:
            if call is not None:
                call.cancel()
            if self._session.state is not SyncState.DISCONNECTED:
                self._session.disconnect()
            await channel.close()
        if connected:
            self._set_link("retrying", target=target, reason=reason)
        else:
            log.debug(event("table_subscriber_attempt_failed", target=target, reason=reason))
        return connected

    async def _answer(
        self, call: grpc.aio.StreamStreamCall, response: distribution_pb2.SubscribeResponse
    ) -> None:
        table = response.table
        held = self._session.held
        verdict = self._session.receive(table, newest_in_cluster=response.newest_in_cluster)
        applied = False
        if verdict.outcome is Outcome.APPLY:
            try:
                self._apply(table)
            except Exception as error:
                reply = self._session.apply_failed(f"apply failed: {type(error).__name__}: {error}")
                log.warning(event("table_nack", version=table.version, reason=reply.nack.reason))
            else:
                reply = self._session.applied()
                applied = True
                resync = RULES[verdict.relation].resync
                if resync:
                    # The held table gives way to one that does not follow it: say so, with what it was.
                    clusters = ({"cluster": f"{table.cluster_id:x}"} if held.cluster_id == table.cluster_id else
                                {"old_cluster": f"{held.cluster_id:x}", "new_cluster": f"{table.cluster_id:x}"})
                    log.warning(event(resync, **clusters, held_version=held.version, version=table.version,
                                      replica=response.replica_id))
                log.info(event("table_ack", version=table.version, epoch=table.epoch,
                               cluster=f"{table.cluster_id:x}", replica=response.replica_id))
        else:
            assert verdict.reply is not None
            reply = verdict.reply
            if verdict.outcome is not Outcome.ALREADY_HELD:
                log.warning(event("table_nack", version=table.version, reason=verdict.reason))
        await call.write(reply)
        if applied and self._store is not None:
            try:
                await asyncio.to_thread(self._store.save, table)
            except OSError as error:
                log.warning(event("table_store_failed", path=self._store.path, version=table.version,
                                  error=error))

    def _set_link(self, link: str, **fields: object) -> None:
        self._link = link
        if link == "connected":
            log.info(event("table_subscriber_connected", **fields))
        else:
            log.warning(event(f"table_subscriber_{link}", **fields))


async def _call_error(call: grpc.aio.StreamStreamCall, timeout_s: float) -> str:
    # Bounded: a server that is not a distribution replica may keep the call open without a status.
    try:
        code = await asyncio.wait_for(call.code(), timeout_s)
    except TimeoutError:
        return "the server did not identify itself as a table distribution replica"
    details = await call.details()
    return f"{code.name}: {details}" if details else code.name
