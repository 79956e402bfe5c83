"""A real grpc.aio distribution server and router subscriber on 127.0.0.1 ephemeral ports: tables flow, ACK
and NACK show in the cache's router status, older tables are refused, failover, TLS and mutual TLS.

Certificates come from a throwaway CA made at test time (tests/fixtures/throwaway_ca.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest

from control_plane.distribution.server import ServerTlsSettings, start_distribution_server
from control_plane.distribution.table_cache import RouterStatus, TableCache
from data_plane.table.store import TableStore
from data_plane.table.subscriber import Backoff, ClientTlsSettings, TableSubscriber
from fixtures.throwaway_ca import Pki
from meridian_common.table_hash import content_hash
from meridian_proto import distribution_pb2, distribution_pb2_grpc, routing_pb2

REGION = "eu-west"
FAST = Backoff(initial_s=0.02, max_s=0.2)


def make_table(version: int, *, bad: bool = False, region: str = REGION, cluster: int = 0) -> routing_pb2.RoutingTable:
    models = [routing_pb2.ModelRoute(model="bad" if bad else "m", policy="latency-first")]
    return routing_pb2.RoutingTable(version=version, epoch=1, region=region, models=models,
                                    content_hash=content_hash(models), source="control-plane", cluster_id=cluster)


def run(coroutine: Coroutine[Any, Any, None], timeout_s: float = 15.0) -> None:
    asyncio.run(asyncio.wait_for(coroutine, timeout_s))


async def eventually(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout_s}s: {what}")


class Router:
    """What the router wires in: a validator and an atomic swap."""

    def __init__(self) -> None:
        self.versions: list[int] = []

    @staticmethod
    def validate(table: routing_pb2.RoutingTable) -> None:
        if any(m.model == "bad" for m in table.models):
            raise ValueError("model 'bad' has no deployments")

    def apply(self, table: routing_pb2.RoutingTable) -> None:
        self.versions.append(table.version)


def subscriber(targets: list[str], router: Router, *, initial: int = 0, router_id: str = "router-1",
               tls: ClientTlsSettings | None = None, store: TableStore | None = None, cluster: int = 0
               ) -> TableSubscriber:
    return TableSubscriber(targets, router_id=router_id, region=REGION, url=f"http://{router_id}:8080",
                           initial=make_table(initial, cluster=cluster), validate=Router.validate, apply=router.apply,
                           store=store, tls=tls, backoff=FAST, connect_timeout_s=2.0)


def status_of(cache: TableCache, router_id: str = "router-1") -> RouterStatus | None:
    return next((s for s in cache.router_statuses(now=0.0) if s.router_id == router_id and s.connected), None)


def acked(cache: TableCache, router_id: str = "router-1") -> int | None:
    status = status_of(cache, router_id)
    return status.acked_version if status is not None else None


async def serve(cache: TableCache, tls: ServerTlsSettings | None = None) -> tuple[grpc.aio.Server, str]:
    server, port = await start_distribution_server(cache, "127.0.0.1", 0, tls=tls)
    return server, f"127.0.0.1:{port}"


def test_tables_flow_and_acks_are_recorded(tmp_path: Path) -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(1))
        server, target = await serve(cache)
        router = Router()
        store = TableStore(tmp_path / "table.bin")
        try:
            async with subscriber([target], router, store=store) as sub:
                await eventually(lambda: acked(cache) == 1, "ack of 1")
                cache.set_table(make_table(2))
                await eventually(lambda: acked(cache) == 2, "ack of 2")
                assert router.versions == [1, 2]
                status = status_of(cache)
                assert status is not None
                assert (status.url, status.replica_id) == ("http://router-1:8080", "cp-1")
                assert status.region == REGION
                assert sub.status().link == "connected" and sub.status().replica_id == "cp-1"
                await eventually(lambda: getattr(store.load(), "version", None) == 2, "table persisted")
        finally:
            await server.stop(0)

    run(body())


def test_nack_keeps_the_previous_table_and_shows_the_reason() -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(1))
        server, target = await serve(cache)
        router = Router()
        try:
            async with subscriber([target], router) as sub:
                await eventually(lambda: router.versions == [1], "table 1 applied")
                cache.set_table(make_table(2, bad=True))
                await eventually(lambda: getattr(status_of(cache), "last_nack_version", None) == 2, "NACK")
                status = status_of(cache)
                assert status is not None
                assert status.acked_version == 1
                assert status.last_nack_reason == "model 'bad' has no deployments"
                assert router.versions == [1] and sub.status().held_version == 1
                cache.set_table(make_table(3))
                await eventually(lambda: router.versions == [1, 3], "the next good table applied")
        finally:
            await server.stop(0)

    run(body())


def test_a_router_holding_a_newer_version_gets_nothing_older() -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(5))
        server, target = await serve(cache)
        router = Router()
        try:
            async with subscriber([target], router, initial=9):
                await eventually(lambda: status_of(cache) is not None, "router connected")
                await asyncio.sleep(0.2)
                status = status_of(cache)
                assert status is not None and (status.acked_version, status.in_flight_version) == (9, None)
                assert router.versions == []
        finally:
            await server.stop(0)

    run(body())


def test_a_router_beyond_its_cluster_gets_the_newest_table_etcd_holds(caplog: pytest.LogCaptureFixture) -> None:
    """The router holds a huge version of the cluster: the servicer asks etcd (here a stand-in), which holds
    version 6; the router takes it, and the next table as usual."""
    reads: list[str] = []

    async def read_newest(region: str) -> routing_pb2.RoutingTable:
        reads.append(region)
        return make_table(6, cluster=0xC1)

    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(4, cluster=0xC1))
        server, port = await start_distribution_server(cache, "127.0.0.1", 0, tls=None, read_newest=read_newest)
        router = Router()
        try:
            async with subscriber([f"127.0.0.1:{port}"], router, initial=2**62, cluster=0xC1):
                await eventually(lambda: router.versions == [6], "etcd's newest applied")
                cache.set_table(make_table(7, cluster=0xC1))
                await eventually(lambda: router.versions == [6, 7], "the next table applied")
                assert reads == [REGION]
        finally:
            await server.stop(0)

    with caplog.at_level(logging.INFO):
        run(body())
    assert "router_beyond_cluster router=router-1" in caplog.text and f"held_version={2**62}" in caplog.text
    assert f"table_history_rewound cluster=c1 held_version={2**62} version=6" in caplog.text


class OlderTableServicer(distribution_pb2_grpc.TableDistributionServicer):
    """A misbehaving replica that sends an old table whatever the router holds."""

    def __init__(self, table: routing_pb2.RoutingTable) -> None:
        self.table = table
        self.answers: list[distribution_pb2.SubscribeRequest] = []

    async def Subscribe(  # noqa: N802
        self,
        request_iterator: AsyncIterator[distribution_pb2.SubscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[distribution_pb2.SubscribeResponse]:
        await context.send_initial_metadata((("meridian-replica-id", "rogue"),))
        requests = aiter(request_iterator)
        await anext(requests)
        yield distribution_pb2.SubscribeResponse(table=self.table, replica_id="rogue")
        self.answers.append(await anext(requests))
        await asyncio.sleep(30)


def test_an_older_table_is_refused_over_the_wire() -> None:
    async def body() -> None:
        rogue = OlderTableServicer(make_table(3))
        server = grpc.aio.server()
        distribution_pb2_grpc.add_TableDistributionServicer_to_server(rogue, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        router = Router()
        try:
            async with subscriber([f"127.0.0.1:{port}"], router, initial=7) as sub:
                await eventually(lambda: bool(rogue.answers), "the router answered")
                expected = distribution_pb2.Nack(version=3, reason="older than held version 7")
                assert rogue.answers[0].nack == expected
                assert router.versions == [] and sub.status().held_version == 7
        finally:
            await server.stop(0)

    run(body())


@pytest.mark.parametrize(
    ("messages", "code", "details"),
    [
        ([distribution_pb2.SubscribeRequest(ack=distribution_pb2.Ack(version=1))],
         grpc.StatusCode.INVALID_ARGUMENT, "the first message of a stream must be a hello"),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "no hello within 0.3s"),
        ([distribution_pb2.SubscribeRequest(hello=distribution_pb2.RouterHello(router_id="r", region=REGION)),
          distribution_pb2.SubscribeRequest(ack=distribution_pb2.Ack(version=4))],
         grpc.StatusCode.FAILED_PRECONDITION, "event ack is not allowed in state idle"),
    ],
    ids=["ack-first", "silent", "unsolicited-ack"],
)
def test_protocol_violations_end_the_stream_with_the_reason(
    messages: list[distribution_pb2.SubscribeRequest], code: grpc.StatusCode, details: str
) -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        server, port = await start_distribution_server(cache, "127.0.0.1", 0, tls=None, hello_timeout_s=0.3)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = distribution_pb2_grpc.TableDistributionStub(channel).Subscribe()
                for message in messages:
                    await call.write(message)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await asyncio.wait_for(call.read(), 3.0)
                assert (raised.value.code(), raised.value.details()) == (code, details)
            await eventually(lambda: status_of(cache, "r") is None, "no router left connected")
        finally:
            await server.stop(0)

    run(body())


def test_the_subscriber_fails_over_to_the_next_replica() -> None:
    async def body() -> None:
        first_cache, second_cache = TableCache("cp-a"), TableCache("cp-b")
        for cache in (first_cache, second_cache):
            cache.set_table(make_table(1))
        first, first_target = await serve(first_cache)
        second, second_target = await serve(second_cache)
        router = Router()
        try:
            async with subscriber([first_target, second_target], router) as sub:
                await eventually(lambda: acked(first_cache) == 1, "table 1 from the first replica")
                await first.stop(0)
                second_cache.set_table(make_table(2))
                await eventually(lambda: acked(second_cache) == 2, "table 2 acked to the second replica")
                assert router.versions == [1, 2] and sub.status().replica_id == "cp-b"
        finally:
            await first.stop(0)
            await second.stop(0)

    run(body())


def test_unreachable_replicas_are_retried_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(4))
        server, target = await serve(cache)
        await server.stop(0)  # its port is now closed
        router = Router()
        with caplog.at_level(logging.DEBUG, logger="data_plane.table.subscriber"):
            async with subscriber([target, target], router) as sub:
                await asyncio.sleep(1.0)
                assert sub.status().link == "unreachable"
                server, _ = await start_distribution_server(cache, "127.0.0.1", int(target.rsplit(":", 1)[1]),
                                                            tls=None)
                try:
                    await eventually(lambda: router.versions == [4], "table once a replica is back")
                finally:
                    await server.stop(0)
        attempts = [r for r in caplog.records if "table_subscriber_attempt_failed" in r.getMessage()]
        warnings = [r.getMessage().split()[0] for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(attempts) >= 4, "it kept trying"
        assert warnings.count("table_subscriber_unreachable") == 1, warnings

    run(body())


def test_close_stops_the_subscriber_promptly() -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(1))
        server, target = await serve(cache)
        router = Router()
        try:
            sub = subscriber([target], router)
            task = asyncio.create_task(sub.run())
            await eventually(lambda: router.versions == [1], "table applied")
            await asyncio.wait_for(sub.close(), 2.0)
            assert task.done() and sub.status().link == "closed"
            await eventually(lambda: status_of(cache) is None, "the server saw the disconnection")
        finally:
            await server.stop(0)

    run(body())


# TLS: the throwaway CA of tests/fixtures/throwaway_ca.py (fixture `pki`).


async def refused(cache: TableCache, sub: TableSubscriber, router: Router, router_id: str) -> None:
    await asyncio.sleep(0.8)
    assert router_id not in {s.router_id for s in cache.router_statuses(now=0.0)}
    assert router.versions == []
    assert sub.status().link in ("starting", "unreachable")


def test_tls_server_certificate(pki: Pki) -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(1))
        server, target = await serve(cache, ServerTlsSettings.from_files(pki.server_cert, pki.server_key))
        try:
            router = Router()
            async with subscriber([target], router, tls=ClientTlsSettings.from_files(pki.ca)):
                await eventually(lambda: router.versions == [1], "table over TLS")
            plain_router = Router()
            async with subscriber([target], plain_router, router_id="plain") as plain:
                await refused(cache, plain, plain_router, "plain")
            untrusting_router = Router()
            async with subscriber([target], untrusting_router, router_id="untrusting",
                                  tls=ClientTlsSettings.from_files(pki.other_ca)) as untrusting:
                await refused(cache, untrusting, untrusting_router, "untrusting")
        finally:
            await server.stop(0)

    run(body())


def test_mutual_tls_refuses_a_client_of_another_ca(pki: Pki) -> None:
    async def body() -> None:
        cache = TableCache("cp-1")
        cache.set_table(make_table(1))
        tls = ServerTlsSettings.from_files(pki.server_cert, pki.server_key, client_ca_path=pki.ca)
        server, target = await serve(cache, tls)
        try:
            rogue_router = Router()
            rogue_tls = ClientTlsSettings.from_files(pki.ca, pki.rogue_cert, pki.rogue_key)
            async with subscriber([target], rogue_router, router_id="rogue", tls=rogue_tls) as rogue:
                await refused(cache, rogue, rogue_router, "rogue")
            anonymous_router = Router()
            async with subscriber([target], anonymous_router, router_id="anonymous",
                                  tls=ClientTlsSettings.from_files(pki.ca)) as anonymous:
                await refused(cache, anonymous, anonymous_router, "anonymous")
            router = Router()
            client_tls = ClientTlsSettings.from_files(pki.ca, pki.client_cert, pki.client_key)
            async with subscriber([target], router, tls=client_tls):
                await eventually(lambda: router.versions == [1], "table over mutual TLS")
                assert status_of(cache) is not None
        finally:
            await server.stop(0)

    run(body())


def test_settings_keep_the_private_key_out_of_their_repr() -> None:
    server = ServerTlsSettings(b"CERT", b"SECRET-KEY")
    client = ClientTlsSettings(b"CA", b"CERT", b"SECRET-KEY")
    assert "SECRET" not in repr(server) and "SECRET" not in repr(client)

