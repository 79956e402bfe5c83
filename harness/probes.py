"""Periodic probes during a chaos run: every router's `/routing` (table version and epoch, breakers, health,
telemetry status, control-plane link) and every replica's `/health` (role, publishing). Parsing is pure;
the loop is a thin shell, bounded by the run's stop event and a probe count."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from harness.timeline import ReplicaProbe, RouterProbe

PROBE_TIMEOUT_S = 1.0
MAX_PROBE_ROUNDS = 10_000


def router_probe_from(t_s: float, router_id: str, region: str, body: Any) -> RouterProbe:
    if not isinstance(body, Mapping):
        return RouterProbe(t_s, router_id, region, reachable=False)
    table = body.get("table") or {}
    telemetry = body.get("telemetry") or {}
    link = (body.get("control_plane") or {}).get("link")
    breakers: list[tuple[str, str]] = []
    healthy: list[tuple[str, bool]] = []
    budgets = tuple((str(name), model.get("latency_budget_ms")) for name, model in (body.get("models") or {}).items())
    for model in (body.get("models") or {}).values():
        for deployment in model.get("deployments", []):
            breakers.append((str(deployment.get("name")), str(deployment.get("breaker"))))
            healthy.append((str(deployment.get("name")), bool(deployment.get("healthy"))))
    return RouterProbe(
        t_s, router_id, region, reachable=True, table_version=table.get("version"), table_epoch=table.get("epoch"),
        table_source=table.get("source"), control_plane_link=link, breakers=tuple(breakers), healthy=tuple(healthy),
        telemetry_connected=telemetry.get("connected"), dropped_samples=telemetry.get("dropped_samples"),
        buffered_batches=telemetry.get("buffered_batches"), last_flush_unix_ms=telemetry.get("last_flush_unix_ms"),
        limits_synced_unix_ms=(body.get("rate_limits") or {}).get("last_sync_unix_ms"), latency_budgets_ms=budgets)


def replica_probe_from(t_s: float, replica: str, body: Any) -> ReplicaProbe:
    if not isinstance(body, Mapping):
        return ReplicaProbe(t_s, replica, reachable=False)
    return ReplicaProbe(t_s, replica, reachable=True, role=body.get("role"), publishing=body.get("publishing"),
                        etcd_connected=body.get("etcd_connected"), pid=body.get("pid"))


class Prober:
    def __init__(self, routers: Mapping[str, tuple[str, str]], replicas: Mapping[str, str],
                 clock: Callable[[], float], interval_s: float = 0.15) -> None:
        """`routers`: id -> (region, URL); `replicas`: id -> admin URL."""
        self._routers = routers
        self._replicas = replicas
        self._clock = clock
        self._interval_s = interval_s
        self.router_probes: list[RouterProbe] = []
        self.replica_probes: list[ReplicaProbe] = []

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(MAX_PROBE_ROUNDS):
                if stop.is_set():
                    return
                await self.probe_once(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._interval_s)

    async def probe_once(self, session: aiohttp.ClientSession) -> None:
        async def router(router_id: str, region: str, url: str) -> None:
            t = self._clock()
            self.router_probes.append(router_probe_from(t, router_id, region, await _get(session, f"{url}/routing")))

        async def replica(replica_id: str, url: str) -> None:
            t = self._clock()
            self.replica_probes.append(replica_probe_from(t, replica_id, await _get(session, f"{url}/health")))

        await asyncio.gather(*(router(rid, region, url) for rid, (region, url) in self._routers.items()),
                             *(replica(rid, url) for rid, url in self._replicas.items()))


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return None
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
