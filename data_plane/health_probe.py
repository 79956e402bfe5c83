"""Active health checks: a periodic `GET {url}/models` per backend, fed into the same health state as
live traffic. Backends shared by several models are probed once."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import aiohttp

from data_plane.forwarding import upstream_headers
from data_plane.live_state import LiveDeployment, RouterState
from data_plane.metrics import RouterMetrics
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)


async def probe(session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout_s: float) -> bool:
    try:
        async with session.get(f"{url}/models", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            await response.read()
            return response.status < 500
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def probe_all(session: aiohttp.ClientSession, state: RouterState, metrics: RouterMetrics) -> None:
    by_backend: dict[tuple[str, str], list[LiveDeployment]] = defaultdict(list)
    for live in state.live.values():
        by_backend[(live.spec.url, live.spec.api_key_env)].append(live)
    timeout_s = state.health_settings.timeout_s
    results = await asyncio.gather(*(
        probe(session, url, upstream_headers(group[0].spec), timeout_s) for (url, _), group in by_backend.items()
    ))
    for group, ok in zip(by_backend.values(), results, strict=True):
        for live in group:
            was_healthy = live.health.healthy
            live.health.record_probe(ok)
            if live.health.healthy != was_healthy:
                log.warning(event("health_changed", model=live.model, deployment=live.spec.name,
                                  healthy=live.health.healthy))
            metrics.health_state.labels(state.region, live.model, live.spec.name,
                                        live.spec.architecture).set(1 if live.health.healthy else 0)


async def run_health_checks(session: aiohttp.ClientSession, state: RouterState, metrics: RouterMetrics) -> None:
    while True:
        await probe_all(session, state, metrics)
        await asyncio.sleep(state.health_settings.interval_s)
