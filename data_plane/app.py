"""Builds and runs the router's aiohttp application: routes, error middleware, the components under their
keys (data_plane/app_keys.py), and one cleanup context per resource started with the application."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from data_plane.api import openai_handlers, ops_handlers, regions_directory
from data_plane.api.worker_metrics import sibling_listener
from data_plane.app_keys import (
    BODY_INTAKE,
    CACHE,
    CONFIG,
    CREDENTIALS,
    FORWARDER,
    METRICS,
    OUTCOMES,
    PUBLIC_URL,
    QUEUES,
    ROUTER_ID,
    SERVING,
    SESSION,
    SHARED_LIMITS,
    STATE,
    TABLE_STORE,
    TABLE_SUBSCRIBER,
    TELEMETRY,
    TELEMETRY_PUBLISHER,
    WORKER,
)
from data_plane.auth import Credentials
from data_plane.config import RouterConfig, bootstrap_table
from data_plane.errors import ClientError, error_response
from data_plane.jobs import handlers as job_handlers
from data_plane.limits.rate_limits import RateLimits
from data_plane.limits.shared_limits import SharedLimits
from data_plane.limits.waiting_room import WaitingRooms
from data_plane.live_state import RouterState
from data_plane.log_throttle import LogThrottle
from data_plane.metrics import RouterMetrics
from data_plane.serving.engine_scraper import EngineScraper
from data_plane.serving.forwarding import Forwarder, ForwardSettings
from data_plane.serving.health_probe import run_health_checks
from data_plane.serving.outcome import OutcomeRecorder
from data_plane.serving.pipeline import Serving
from data_plane.serving.request_body import BodyIntake
from data_plane.serving.response_cache import MemoryCacheStore, RedisCacheStore, ResponseCache
from data_plane.serving.stream_resume import ResumeSettings
from data_plane.table.snapshot import InvalidTable, KeyEnvAllowlist, TableSnapshot, snapshot_from_proto
from data_plane.table.store import TableStore
from data_plane.table.subscriber import ClientTlsSettings, TableSubscriber
from data_plane.telemetry.accumulator import TelemetryAccumulators
from data_plane.telemetry.publisher import TelemetryPublisher
from data_plane.worker import WorkerIdentity
from meridian_common.aiohttp_serving import serve_until_cancelled
from meridian_common.logging_setup import event
from meridian_common.redis_connection import redis_client
from meridian_common.supervision import supervise
from meridian_proto import routing_pb2, telemetry_pb2

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


# A fault that every request hits logs its traceback this often, not once per request.
UNHANDLED_TRACEBACK_INTERVAL_S = 60.0


def openai_errors(*, metrics: RouterMetrics, region: str, throttle: LogThrottle,
                  clock: Callable[[], float] = time.monotonic) -> Middleware:
    """Turns every error into an answer in OpenAI's shape; an unexpected exception is a 500 whose traceback is
    logged at most once per `throttle` interval per exception type, the rest counted in
    meridian_unhandled_errors_total and reported as `held_back` in the next line logged."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ClientError as error:
            return error.response()
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return error_response(error.status, f"{error.reason}: {request.method} {request.path}",
                                  code=error.reason.lower().replace(" ", "_"))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as error:
            kind = type(error).__name__
            metrics.unhandled_errors.labels(region, kind).inc()
            held_back = throttle.admit(kind, clock())
            if held_back is not None:
                log.exception(event("unhandled_error", method=request.method, path=request.path, error=kind,
                                    held_back=held_back))
            return error_response(500, "the router failed on this request; see its log", code="internal_error")

    return middleware


def _record_table(metrics: RouterMetrics, region: str) -> Callable[[TableSnapshot], None]:
    def record(table: TableSnapshot) -> None:
        metrics.table_version.clear()
        metrics.table_version.labels(region, table.source).set(table.version)
        log.info(event("table_applied", region=region, version=table.version, source=table.source,
                       models=len(table.models), hash=table.content_hash[:12]))

    return record


def key_env_allowlist(config: RouterConfig) -> KeyEnvAllowlist:
    return KeyEnvAllowlist(config.backend_keys.env_prefixes, config.backend_key_env_names())


def _initial_table(config: RouterConfig, store: TableStore | None) -> TableSnapshot:
    """The persisted table when there is a valid one (a restart while the control plane is down still
    routes as it last did), else the config file's."""
    key_envs = key_env_allowlist(config)
    persisted = store.load() if store is not None else None
    if persisted is not None:
        try:
            return snapshot_from_proto(persisted, expected_region=config.region, key_envs=key_envs)
        except InvalidTable as error:
            log.warning(event("persisted_table_ignored", reason=str(error)))
    return snapshot_from_proto(bootstrap_table(config), expected_region=config.region, key_envs=key_envs)


def _queues(metrics: RouterMetrics, region: str) -> WaitingRooms:
    return WaitingRooms(on_depth=lambda model, depth: metrics.queue_depth.labels(region, model).set(depth),
                        on_wait=lambda model, wait_s: metrics.queue_wait.labels(region, model).observe(wait_s))


def _apply_queues(queues: WaitingRooms) -> Callable[[TableSnapshot], None]:
    def apply(table: TableSnapshot) -> None:
        queues.apply((m.name, m.queue_size, m.queue_timeout_s) for m in table.models.values())

    return apply


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    config, state, metrics = app[CONFIG], app[STATE], app[METRICS]
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        app[SESSION] = session
        recorder = app[OUTCOMES] = OutcomeRecorder(state, metrics, app[TELEMETRY], config.region, state.rate_limits)
        app[FORWARDER] = Forwarder(session, state, metrics, recorder, ForwardSettings(
            region=config.region, max_attempts=config.max_attempts,
            request_timeout_s=config.request_timeout_s, connect_timeout_s=config.connect_timeout_s,
            resume=ResumeSettings(config.max_stream_resumes, config.stream_stall, config.chat_continuation),
        ), rate_limits=state.rate_limits, on_release=app[QUEUES].notify)
        yield


def _supervised(app: web.Application, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    return asyncio.create_task(supervise(name, run, on_restart=app[METRICS].restarts(app[CONFIG].region)))


async def _health_checks(app: web.Application) -> AsyncIterator[None]:
    session, state, metrics, outcomes = app[SESSION], app[STATE], app[METRICS], app[OUTCOMES]
    task = _supervised(app, "health_checks", lambda: run_health_checks(session, state, metrics, outcomes))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _engine_scraper(app: web.Application) -> AsyncIterator[None]:
    settings = app[CONFIG].engine_metrics
    if not settings.enabled:
        yield
        return
    scraper = EngineScraper(app[SESSION], app[STATE], app[METRICS], settings)
    task = _supervised(app, "engine_scraper", scraper.run)
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _response_cache(app: web.Application) -> AsyncIterator[None]:
    redis_url = app[CONFIG].redis_url
    client = (None if redis_url is None
              else redis_client(redis_url, socket_connect_timeout=0.25, socket_timeout=0.25))
    cache = app[CACHE] = ResponseCache(MemoryCacheStore() if client is None else RedisCacheStore(client))
    yield
    await cache.drain()
    if client is not None:
        await client.aclose()


async def _serving(app: web.Application) -> AsyncIterator[None]:
    """What the endpoints and the job worker serve requests with, once the forwarder and the cache exist."""
    config = app[CONFIG]
    app[SERVING] = Serving(region=config.region, request_timeout_s=config.request_timeout_s, state=app[STATE],
                           metrics=app[METRICS], queues=app[QUEUES], forwarder=app[FORWARDER], cache=app[CACHE])
    yield


async def _table_subscriber(app: web.Application) -> AsyncIterator[None]:
    config, state = app[CONFIG], app[STATE]
    link = config.control_plane
    if link is None:
        yield
        return
    validated: list[TableSnapshot] = []
    key_envs = key_env_allowlist(config)

    def validate(table: routing_pb2.RoutingTable) -> None:
        validated.append(snapshot_from_proto(table, expected_region=config.region, key_envs=key_envs))

    def apply(table: routing_pb2.RoutingTable) -> None:
        # The subscriber calls apply right after a successful validate, in the same loop step.
        state.apply(validated.pop())

    tls = (ClientTlsSettings.from_files(link.ca_file, link.cert_file, link.key_file, link.server_name)
           if link.ca_file is not None else None)
    async with TableSubscriber(
        link.targets, router_id=app[ROUTER_ID], region=config.region, url=app.get(PUBLIC_URL, ""),
        initial=state.table.proto, validate=validate, apply=apply, store=app.get(TABLE_STORE), tls=tls,
    ) as subscriber:
        app[TABLE_SUBSCRIBER] = subscriber
        yield


async def _shared_limits(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    limits = app[STATE].rate_limits
    if config.redis_url is None or limits is None:
        yield
        return
    settings = config.rate_limits
    shared = app[SHARED_LIMITS] = SharedLimits(config.redis_url, limits, router_id=app[ROUTER_ID],
                                               interval_s=settings.sync_interval_s,
                                               heartbeat_ttl_s=settings.heartbeat_ttl_s)
    task = _supervised(app, "shared_limits", shared.run)
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await shared.close()


def _telemetry_collector(router_id: str, state: RouterState, telemetry: TelemetryAccumulators,
                         queues: WaitingRooms) -> Callable[[], list[telemetry_pb2.TelemetrySample]]:
    def collect() -> list[telemetry_pb2.TelemetrySample]:
        now = time.monotonic()
        stale_after_s = state.engine_metrics.stale_after_s
        in_flight, breakers, regions, architectures, engines = {}, {}, {}, {}, {}
        for key, live in state.live.items():
            in_flight[key] = live.stats.in_flight
            breakers[key] = str(live.breaker.state_at(now))
            regions[key] = live.spec.region
            architectures[key] = live.spec.architecture
            # Only this router's own scrape: the table's figures came from the control plane in the first place.
            if (engine := live.scraped_engine(now, stale_after_s)) is not None:
                engines[key] = engine
        samples = telemetry.drain(
            router_id=router_id, region=state.region, table_version=state.table.version,
            now_unix_ms=int(time.time() * 1000), in_flight=in_flight, breaker_states=breakers,
            deployment_regions=regions, queue_depth=queues.depths(), architectures=architectures,
            engines=engines)
        waits = {name: room.drain_wait_p95_ms() for name, room in queues.rooms.items()}
        for sample in samples:
            sample.queue_wait_p95_ms = waits.get(sample.model, 0.0)
        return samples

    return collect


async def _telemetry(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.redis_url is None:
        yield
        return
    settings = config.telemetry
    collect = _telemetry_collector(app[ROUTER_ID], app[STATE], app[TELEMETRY], app[QUEUES])
    publisher = TelemetryPublisher(config.redis_url, config.region, interval_s=settings.interval_s,
                                   buffer_max_batches=settings.buffer_max_batches,
                                   stream_maxlen=settings.stream_maxlen, collect=collect)
    app[TELEMETRY_PUBLISHER] = publisher
    task = _supervised(app, "telemetry_publisher", publisher.run)
    yield
    await publisher.close()
    task.cancel()  # a no-op once the last tick ended run; stops a restart that was waiting out its backoff
    await asyncio.gather(task, return_exceptions=True)


async def _worker_metrics(app: web.Application) -> AsyncIterator[None]:
    """A worker's own metrics on its private socket, for the sibling that answers a scrape."""
    async for _ in sibling_listener(app[WORKER], app[METRICS], lambda: ops_handlers.refresh_scrape_gauges(app)):
        yield


def default_router_id(config: RouterConfig, pid: int) -> str:
    return config.router_id or f"{config.region}-{socket.gethostname()}-{pid}"


def create_app(config: RouterConfig, worker: WorkerIdentity | None = None) -> web.Application:
    """The application with the components that exist before start-up (the routing state from the persisted
    or the configured table, metrics, credentials, queues); its cleanup contexts start the rest. `worker`:
    this router is that worker of a `--workers N` pool (its own router id, its metrics merged on scrape)."""
    metrics = RouterMetrics()
    table_file = worker.table_file(config.region) if worker is not None else f"table-{config.region}.bin"
    store = TableStore(config.state_dir / table_file) if config.state_dir else None
    table = _initial_table(config, store)
    queues = _queues(metrics, config.region)
    limits = RateLimits(config.region, sync_interval_s=config.rate_limits.sync_interval_s,
                        max_client_keys=config.rate_limits.max_client_keys)
    state = RouterState(region=config.region, health_settings=config.health_check,
                        statistics=config.statistics, engine_metrics=config.engine_metrics,
                        prefix_affinity=config.prefix_affinity, table=table,
                        on_apply=[_record_table(metrics, config.region), _apply_queues(queues)],
                        rate_limits=limits)
    _record_table(metrics, config.region)(table)
    metrics.in_flight.read_from(lambda: [((config.region, live.model, live.spec.name, live.spec.architecture),
                                     live.stats.in_flight) for live in state.live.values()])
    errors = openai_errors(metrics=metrics, region=config.region,
                           throttle=LogThrottle(UNHANDLED_TRACEBACK_INTERVAL_S))
    app = web.Application(middlewares=[errors], client_max_size=config.max_body_bytes + 1)
    app[CONFIG] = config
    if worker is None:
        app[ROUTER_ID] = default_router_id(config, os.getpid())
    else:
        # Without a configured id the pool's pid names the router, so that its workers' ids share a stem.
        app[WORKER] = worker
        app[ROUTER_ID] = worker.router_id(default_router_id(config, os.getppid()))
    app[STATE] = state
    app[METRICS] = metrics
    app[CREDENTIALS] = Credentials.from_environment(config.client_api_keys_env, config.admin_token_env)
    app[QUEUES] = queues
    bodies = config.request_bodies
    app[BODY_INTAKE] = BodyIntake(max_body_bytes=config.max_body_bytes, in_flight_bytes=bodies.in_flight_bytes,
                                  read_timeout_s=bodies.read_timeout_s, metrics=metrics, region=config.region)
    app[TELEMETRY] = TelemetryAccumulators(started_unix_ms=int(time.time() * 1000))
    if store is not None:
        app[TABLE_STORE] = store
    openai_handlers.add_routes(app)
    ops_handlers.add_routes(app)
    regions_directory.add_routes(app)
    job_handlers.add_routes(app)
    # Torn down in reverse: running jobs abandoned first, telemetry's last flush next, the client session last.
    app.cleanup_ctx.extend([_client_session, _health_checks, _engine_scraper, _response_cache, _serving, _shared_limits,
                            _table_subscriber, _telemetry, job_handlers.jobs_context])
    if worker is not None:
        app.cleanup_ctx.append(_worker_metrics)
    return app


async def serve(app: web.Application, host: str, port: int, port_file: Path | None = None) -> None:
    """Runs until cancelled. Handler cancellation is on so that a client that goes away cancels its
    upstream request."""
    config = app[CONFIG]

    def learn_url(bound: int) -> None:
        app[PUBLIC_URL] = config.public_url or f"http://{host}:{bound}"

    # A worker shares its port with its siblings (SO_REUSEPORT): the kernel spreads connections over them.
    await serve_until_cancelled(app, host, port, port_file=port_file, handler_cancellation=True,
                                name=f"router region={config.region} id={app[ROUTER_ID]}", on_bound=learn_url,
                                reuse_port=WORKER in app)
