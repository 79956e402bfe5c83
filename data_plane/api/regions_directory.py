"""`GET /v1/regions`: every region's routers (from the config's `peers`, this router included) with their
health, so that a client can pick the nearest healthy router.

Peers are probed with `GET /health` concurrently (short timeout) and the answers are cached for about a
second, so a burst of clients costs the peers one probe each; the router itself always counts as healthy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from data_plane.app_keys import CONFIG, PUBLIC_URL, SESSION

CACHE_TTL_S = 1.0
PROBE_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class PeerProbe:
    healthy: bool
    rtt_ms: float | None
    """The probe's round trip from this router; None when it failed."""


def normalised_url(url: str) -> str:
    return str(url).rstrip("/")


def peer_urls(peers: Mapping[str, Sequence[Any]], region: str, self_url: str) -> dict[str, list[str]]:
    """The configured peers by region with this router added to its own region when it is not listed."""
    listed = {name: [normalised_url(u) for u in urls] for name, urls in peers.items()}
    if self_url and self_url not in listed.get(region, []):
        listed.setdefault(region, []).insert(0, self_url)
    return listed


def directory_json(region: str, self_url: str, peers: Mapping[str, Sequence[str]],
                   probes: Mapping[str, PeerProbe]) -> dict[str, Any]:
    """The body of GET /v1/regions: a URL with no probe yet counts as unhealthy."""
    regions: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(peers):
        entries = []
        for url in peers[name]:
            if url == self_url:
                entries.append({"url": url, "healthy": True, "self": True, "rtt_ms": 0.0})
                continue
            probe = probes.get(url, PeerProbe(False, None))
            entry: dict[str, Any] = {"url": url, "healthy": probe.healthy}
            if probe.rtt_ms is not None:
                entry["rtt_ms"] = round(probe.rtt_ms, 3)
            entries.append(entry)
        regions[name] = entries
    return {"region": region, "self": self_url, "regions": regions}


def is_fresh(fetched_at: float | None, now: float, ttl_s: float = CACHE_TTL_S) -> bool:
    return fetched_at is not None and now - fetched_at < ttl_s


@dataclass(slots=True)
class PeerHealthCache:
    """The last probe of every peer, refreshed by at most one task at a time."""

    probes: dict[str, PeerProbe] = field(default_factory=dict)
    fetched_at: float | None = None
    refreshing: asyncio.Task[None] | None = None


DIRECTORY = web.AppKey("regions_directory", PeerHealthCache)


async def _probe(session: aiohttp.ClientSession, url: str) -> PeerProbe:
    started = time.perf_counter()
    try:
        async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as response:
            await response.read()
            healthy = response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return PeerProbe(False, None)
    return PeerProbe(healthy, (time.perf_counter() - started) * 1000)


async def _refresh(cache: PeerHealthCache, session: aiohttp.ClientSession, urls: Sequence[str]) -> None:
    results = await asyncio.gather(*(_probe(session, url) for url in urls))
    cache.probes = dict(zip(urls, results, strict=True))
    cache.fetched_at = time.monotonic()


async def regions(request: web.Request) -> web.Response:
    config, cache = request.app[CONFIG], request.app[DIRECTORY]
    self_url = normalised_url(request.app.get(PUBLIC_URL) or config.public_url or "")
    listed = peer_urls(config.peers, config.region, self_url)
    others = [url for urls in listed.values() for url in urls if url != self_url]
    if others and not is_fresh(cache.fetched_at, time.monotonic()):
        if cache.refreshing is None or cache.refreshing.done():
            cache.refreshing = asyncio.create_task(_refresh(cache, request.app[SESSION], others))
        # shield: a client that goes away must not cancel the refresh other requests wait on.
        await asyncio.shield(cache.refreshing)
    return web.json_response(directory_json(config.region, self_url, listed, cache.probes))


def add_routes(app: web.Application) -> None:
    app[DIRECTORY] = PeerHealthCache()
    app.router.add_get("/v1/regions", regions)
