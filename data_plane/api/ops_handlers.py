"""Operator endpoints: liveness, readiness, the routing table with live figures, metrics, the cache."""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from data_plane.api import worker_metrics
from data_plane.app_keys import (
    CACHE,
    CONFIG,
    CREDENTIALS,
    METRICS,
    PUBLIC_URL,
    QUEUES,
    ROUTER_ID,
    SHARED_LIMITS,
    STATE,
    TABLE_SUBSCRIBER,
    TELEMETRY_PUBLISHER,
    WORKER,
)
from data_plane.jobs.handlers import JOBS
from data_plane.limits.rate_limits import RateLimits
from data_plane.limits.shared_limits import SharedLimits
from data_plane.live_state import LiveDeployment, RouterState
from data_plane.table.subscriber import TableSubscriber
from data_plane.telemetry.publisher import TelemetryPublisher


def redacted_url(url: str) -> str:
    """A URL without credentials or query string (where API keys tend to hide)."""
    return str(URL(url).with_user(None).with_query(None))


def table_age_s(state: RouterState) -> float:
    return max(0.0, time.time() - state.table.computed_at_unix_ms / 1000)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _engine_json(state: RouterState, live: LiveDeployment, now: float, now_unix_ms: float) -> dict[str, Any] | None:
    """The engine's own figures the router routes on now (None: none fresh), and where they come from."""
    reading = state.engine_reading(live, now, now_unix_ms)
    if reading is None:
        return None
    figures, source = reading
    return {
        "requests_running": figures.requests_running, "requests_waiting": figures.requests_waiting,
        "kv_cache_usage": _rounded(figures.kv_cache_usage),
        "generation_tokens_per_s": _rounded(figures.generation_tokens_per_s),
        "prefix_cache_hit_rate": _rounded(figures.prefix_cache_hit_rate),
        "age_s": round(max(0.0, now_unix_ms - figures.observed_at_unix_ms) / 1000, 3), "source": str(source),
    }


def _deployment_json(state: RouterState, live: LiveDeployment, now: float, now_unix_ms: float) -> dict[str, Any]:
    spec, view = live.spec, live.stats.view(now)
    return {
        "name": spec.name,
        "url": redacted_url(spec.url),
        "served_model": spec.served_model,
        "region": spec.region,
        "architecture": spec.architecture,
        "cost_per_1m_input": spec.cost_per_1m_input,
        "cost_per_1m_output": spec.cost_per_1m_output,
        "quality": spec.quality,
        "max_concurrency": spec.max_concurrency,
        "weight": spec.weight,
        "rpm_limit": spec.rpm_limit,
        "tpm_limit": spec.tpm_limit,
        "added_latency_ms": spec.added_latency_ms,
        "ejected": spec.ejected,
        "api_key_env": spec.api_key_env or None,
        "breaker": str(live.breaker.state_at(now)),
        "healthy": live.health.healthy,
        "unhealthy_reason": live.health.reason,
        "saturated": live.saturation(now),
        "misconfigured_status": live.misconfigured_status or None,
        "table_figures": {"ttft_ms": spec.ttft_ms, "tpot_ms": spec.tpot_ms, "error_rate": spec.error_rate},
        "engine": _engine_json(state, live, now, now_unix_ms),
        "size_model": live.latency_model.report(now),
        "prefix_blocks_remembered": len(live.prefixes) if live.prefixes is not None else None,
        "stats": {
            "requests": view.requests, "errors": view.errors, "error_rate": round(view.error_rate, 4),
            "answers": view.answers, "output_tokens": view.output_tokens,
            "ttft_ms": _rounded(view.ttft_ms), "tpot_ms": _rounded(view.tpot_ms),
            "ttft_p95_ms": round(view.ttft_p95_ms, 3), "tpot_p95_ms": round(view.tpot_p95_ms, 3),
            "latency_p50_ms": round(view.latency_p50_ms, 3), "latency_p95_ms": round(view.latency_p95_ms, 3),
            "in_flight": view.in_flight, "waiting_first_token_ms": round(view.waiting_first_token_ms, 1),
        },
    }


def _links_json(publisher: TelemetryPublisher | None, subscriber: TableSubscriber | None) -> dict[str, Any]:
    links: dict[str, Any] = {"telemetry": None, "control_plane": None}
    if publisher is not None:
        links["telemetry"] = {
            "connected": publisher.connected, "buffered_batches": publisher.buffered_batches,
            "dropped_samples": publisher.dropped_samples, "last_flush_unix_ms": publisher.last_flush_unix_ms,
        }
    if subscriber is not None:
        status = subscriber.status()
        links["control_plane"] = {
            "link": status.link, "target": status.target, "replica_id": status.replica_id,
            "held_version": status.held_version, "last_nack_version": status.last_nack_version,
            "last_nack_reason": status.last_nack_reason or None,
        }
    return links


def _rate_limits_json(limits: RateLimits | None, shared: SharedLimits | None) -> dict[str, Any] | None:
    if limits is None:
        return None
    # The last round trip that reached Redis: after a failover, when the limits were held on the new primary.
    synced = {"last_sync_unix_ms": shared.last_sync_unix_ms or None} if shared is not None else {}
    return {**limits.status(), **synced}


def _worker_json(app: web.Application) -> dict[str, Any] | None:
    """Which worker answered (None: the router runs alone): what /routing shows is this worker's own."""
    worker = app.get(WORKER)
    return None if worker is None else {"index": worker.index, "count": worker.count, "pid": os.getpid()}


def routing_json(app: web.Application) -> dict[str, Any]:
    state, queues, now, now_unix_ms = app[STATE], app[QUEUES], time.monotonic(), time.time() * 1000
    table = state.table
    return {
        "router_id": app[ROUTER_ID],
        "region": app[CONFIG].region,
        "worker": _worker_json(app),
        "url": app.get(PUBLIC_URL, ""),
        **_links_json(app.get(TELEMETRY_PUBLISHER), app.get(TABLE_SUBSCRIBER)),
        "rate_limits": _rate_limits_json(state.rate_limits, app.get(SHARED_LIMITS)),
        "table": {
            "version": table.version, "epoch": table.epoch, "source": table.source,
            "cluster_id": f"{table.proto.cluster_id:x}",  # the etcd cluster its version counts in; 0 = unknown
            "content_hash": table.content_hash, "computed_at_unix_ms": table.computed_at_unix_ms,
            "age_s": round(table_age_s(state), 3),
        },
        "models": {
            model.name: {
                "policy": model.policy,
                "allowed_policies": list(model.allowed_policies),
                "latency_budget_ms": model.latency_budget_ms,
                "priority": model.priority,
                "score_weights": model.score_weights,
                "typical_output_tokens": model.typical_output_tokens,
                "locality_margin": model.locality_margin,
                "fallbacks": list(model.fallbacks),
                "cache_enabled": model.cache_enabled,
                "client_limits": {"rpm": model.client_rpm, "tpm": model.client_tpm},
                "queue": {"size": model.queue_size, "timeout_s": model.queue_timeout_s,
                          "depth": room.depth if (room := queues.get(model.name)) else 0},
                "deployments": [_deployment_json(state, state.live[(model.name, d.name)], now, now_unix_ms)
                                for d in model.deployments],
            }
            for model in table.models.values()
        },
    }


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    table = state.table
    body = {"ready": bool(table.models), "table_version": table.version, "table_source": table.source,
            "table_age_s": round(table_age_s(state), 3)}
    return web.json_response(body, status=200 if table.models else 503)


def _check_ops(request: web.Request) -> None:
    if request.app[CONFIG].ops_auth:
        request.app[CREDENTIALS].check_admin(request)


async def routing(request: web.Request) -> web.Response:
    _check_ops(request)
    body = routing_json(request.app)
    jobs = request.app.get(JOBS)
    body["jobs"] = jobs.status() if jobs is not None else None
    return web.json_response(body)


def refresh_scrape_gauges(app: web.Application) -> None:
    """The gauges computed when metrics are read rather than when things happen."""
    app[METRICS].table_age.labels(app[CONFIG].region).set(table_age_s(app[STATE]))


async def metrics(request: web.Request) -> web.Response:
    _check_ops(request)
    app = request.app
    refresh_scrape_gauges(app)
    worker = app.get(WORKER)
    if worker is None:
        body = generate_latest(app[METRICS].registry)
    else:
        body = generate_latest(await worker_metrics.all_workers(worker, app[METRICS].registry))  # type: ignore[arg-type]
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def cache_stats(request: web.Request) -> web.Response:
    request.app[CREDENTIALS].check_admin(request)
    return web.json_response(request.app[CACHE].stats())


async def cache_clear(request: web.Request) -> web.Response:
    request.app[CREDENTIALS].check_admin(request)
    return web.json_response({"removed": await request.app[CACHE].store.clear()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/routing", routing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/cache/stats", cache_stats)
    app.router.add_delete("/cache", cache_clear)
