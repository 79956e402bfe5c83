"""The gRPC servicer of TableDistribution.Subscribe: it only moves messages between a router's stream, its
DistributionSession and a TableCache watch (go-control-plane's server shape), plus the server's start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from control_plane.distribution.session import DistributionSession, SessionProtocolError
from control_plane.distribution.table_cache import TableCache
from meridian_common.logging_setup import event
from meridian_common.table_distribution import REPLICA_METADATA_KEY
from meridian_proto import distribution_pb2, distribution_pb2_grpc, routing_pb2

log = logging.getLogger(__name__)


SERVER_OPTIONS: list[tuple[str, int]] = [
    # Pings find routers that vanished without closing their stream; allow the routers' own pings.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(frozen=True, slots=True)
class ServerTlsSettings:
    """PEM bytes of the server's certificate chain and key; with `client_ca_pem`, routers must present a
    certificate signed by that CA (mutual TLS)."""

    cert_chain_pem: bytes
    private_key_pem: bytes = field(repr=False)
    client_ca_pem: bytes | None = None

    @classmethod
    def from_files(
        cls, cert_path: str | Path, key_path: str | Path, client_ca_path: str | Path | None = None
    ) -> ServerTlsSettings:
        return cls(
            cert_chain_pem=Path(cert_path).read_bytes(),
            private_key_pem=Path(key_path).read_bytes(),
            client_ca_pem=Path(client_ca_path).read_bytes() if client_ca_path is not None else None,
        )

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key_pem, self.cert_chain_pem)],
            root_certificates=self.client_ca_pem,
            require_client_auth=self.client_ca_pem is not None,
        )


class _EndOfStream:
    """Queued when the router half-closes its side of the stream."""


class _TableChanged:
    """Queued by the stream's watch when the region's table changed; the watch's `poll()` has the table."""


_TABLE_CHANGED = _TableChanged()
_Inbound = distribution_pb2.SubscribeRequest | routing_pb2.RoutingTable | _EndOfStream | _TableChanged

# The region's table as etcd holds it now (None: none, or etcd could not say).
ReadNewest = Callable[[str], Awaitable[routing_pb2.RoutingTable | None]]


class TableDistributionServicer(distribution_pb2_grpc.TableDistributionServicer):
    def __init__(
        self, cache: TableCache, *, hello_timeout_s: float = 10.0, clock: Callable[[], float] = time.time,
        read_newest: ReadNewest | None = None,
    ) -> None:
        self._cache = cache
        self._hello_timeout_s = hello_timeout_s
        self._clock = clock
        self._read_newest = read_newest

    async def Subscribe(  # noqa: N802 - the generated servicer's method name
        self,
        request_iterator: AsyncIterator[distribution_pb2.SubscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[distribution_pb2.SubscribeResponse]:
        stream_id = self._cache.new_stream_id()
        session = DistributionSession(self._cache.replica_id)
        inbox: asyncio.Queue[_Inbound] = asyncio.Queue()
        tasks = [asyncio.create_task(_pump_requests(request_iterator, inbox))]
        watch = None
        outcome = "cancelled"
        try:
            # Initial metadata tells the router the stream is up even when there is nothing newer to send.
            await context.send_initial_metadata(((REPLICA_METADATA_KEY, self._cache.replica_id),))
            try:
                hello = _hello_of(await asyncio.wait_for(inbox.get(), self._hello_timeout_s))
                session.receive_hello(hello, self._clock())
            except (SessionProtocolError, TimeoutError) as error:
                reason = str(error) or f"no hello within {self._hello_timeout_s}s"
                log.warning(event("router_refused", peer=context.peer(), reason=reason))
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
                raise  # abort() raises already; this keeps the flow visible
            self._cache.record_router(stream_id, session.record())
            log.info(event("router_connected", router=hello.router_id, region=hello.region, url=hello.url,
                           version_held=hello.version_held, peer=context.peer(), stream=stream_id))
            # The watch queues a marker on the stream's one queue, rather than a task per stream awaiting it:
            # with a thousand routers, that task's extra wake-up per table was a good part of a push's fan-out.
            watch = self._cache.watch(hello.region, known_version=None,
                                      on_change=lambda: inbox.put_nowait(_TABLE_CHANGED))
            inbox.put_nowait(_TABLE_CHANGED)  # the region's current table, if any
            while True:
                item = await inbox.get()
                if isinstance(item, _EndOfStream):
                    outcome = "closed by router"
                    return
                if isinstance(item, _TableChanged):
                    changed = watch.poll()
                    if changed is None:
                        continue
                    item = changed
                try:
                    if isinstance(item, routing_pb2.RoutingTable) and session.needs_check(item):
                        response = await self._offer_checked(session, item, stream_id)
                    else:
                        response = self._handle(session, item, stream_id)
                except SessionProtocolError as error:
                    outcome = f"protocol error: {error}"
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
                self._cache.record_router(stream_id, session.record())
                if response is not None:
                    log.debug(event("table_sent", router=hello.router_id, version=response.table.version,
                                    stream=stream_id))
                    yield response
        finally:
            for task in tasks:
                task.cancel()
            if watch is not None:
                watch.close()
            if session.hello is not None:
                self._cache.router_disconnected(stream_id, self._clock())
                log.info(event("router_disconnected", router=session.hello.router_id, region=session.region,
                               acked_version=session.acked_version, reason=outcome, stream=stream_id))
            session.close()

    async def _offer_checked(
        self, session: DistributionSession, table: routing_pb2.RoutingTable, stream_id: int
    ) -> distribution_pb2.SubscribeResponse | None:
        """The router holds a higher version of this table's cluster than this replica serves: etcd says whether
        this replica lags or the router's table is not of this cluster."""
        newest = await self._read_newest(session.region) if self._read_newest is not None else None
        if newest is None:
            return session.offer(table)  # nothing can be proven: the router keeps what it holds
        held = session.acked_version
        response = session.offer_newest(newest)
        if response is not None and response.newest_in_cluster:
            log.warning(event("router_beyond_cluster", router=session.record().router_id, region=session.region,
                              held_version=held, newest_version=newest.version,
                              cluster=f"{newest.cluster_id:x}", stream=stream_id))
        return response

    def _handle(
        self, session: DistributionSession, item: _Inbound, stream_id: int
    ) -> distribution_pb2.SubscribeResponse | None:
        if isinstance(item, routing_pb2.RoutingTable):
            return session.offer(item)
        assert isinstance(item, distribution_pb2.SubscribeRequest)
        response = session.receive(item, self._clock())
        router = session.hello.router_id if session.hello is not None else ""
        kind = item.WhichOneof("kind")
        if kind == "ack":
            log.debug(event("router_ack", router=router, version=item.ack.version, stream=stream_id))
        elif kind == "nack":
            nack = item.nack
            log.warning(event("router_nack", router=router, version=nack.version, reason=nack.reason,
                              stream=stream_id))
        return response


def _hello_of(message: _Inbound) -> distribution_pb2.RouterHello:
    if not isinstance(message, distribution_pb2.SubscribeRequest) or message.WhichOneof("kind") != "hello":
        raise SessionProtocolError("the first message of a stream must be a hello")
    return message.hello


async def _pump_requests(
    requests: AsyncIterator[distribution_pb2.SubscribeRequest], inbox: asyncio.Queue[_Inbound]
) -> None:
    try:
        async for request in requests:
            await inbox.put(request)
    except grpc.RpcError:
        pass  # the stream broke: the same end as a half-close, for the servicer
    await inbox.put(_EndOfStream())


def bind_server(server: grpc.aio.Server, host: str, port: int, tls: ServerTlsSettings | None, what: str) -> int:
    """Binds `server` to host:port, on TLS when `tls` is given; returns the bound port (for port 0). Raises
    OSError naming `what` when the address cannot be bound."""
    address = f"{host}:{port}"
    bound = server.add_insecure_port(address) if tls is None else server.add_secure_port(address, tls.credentials())
    if bound == 0:
        raise OSError(f"could not bind {what} to {address}")
    return bound


async def start_distribution_server(
    cache: TableCache, host: str, port: int, *, tls: ServerTlsSettings | None, hello_timeout_s: float = 10.0,
    read_newest: ReadNewest | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Starts serving TableDistribution; `tls=None` means plaintext, which only the caller's config may ask
    for. `read_newest` reads a region's table from etcd, for routers that hold a higher version than the cache
    (without it they keep theirs). Returns the server (stop it with `await server.stop(grace_s)`) and the bound
    port (for port 0)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    distribution_pb2_grpc.add_TableDistributionServicer_to_server(
        TableDistributionServicer(cache, hello_timeout_s=hello_timeout_s, read_newest=read_newest), server
    )
    bound_port = bind_server(server, host, port, tls, "the table distribution server")
    await server.start()
    log.info(event("distribution_server_started", address=f"{host}:{bound_port}", tls=tls is not None,
                   mutual_tls=tls is not None and tls.client_ca_pem is not None, replica=cache.replica_id))
    return server, bound_port
