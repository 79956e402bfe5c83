"""Bounded closed-loop load for chaos runs: simulated clients in every region, each on its nearest router
(measured round trip plus the topology's RTT from the client's location, as `regions.client` ranks them),
moving to the next nearest when its router does not answer. Every request is recorded.

Bounded twice: by a stop event (the runner's schedule) and by a request count per worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from chaos.timeline import RequestRecord
from regions.client import NoRouterError, RegionClient

REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class LoadPlan:
    model: str
    clients: Mapping[str, str]
    """client name -> the region it sits in."""
    workers_per_client: int = 2
    think_ms: float = 40.0
    max_tokens: int = 4
    max_requests_per_worker: int = 5000


class LoadRecorder:
    """Runs the plan's workers until `stop` is set and keeps every request's record."""

    def __init__(self, plan: LoadPlan, stack: Mapping[str, object], clock: Callable[[], float]) -> None:
        self._plan = plan
        self._stack = stack
        self._clock = clock
        self.records: list[RequestRecord] = []
        self.router_regions = {str(url).rstrip("/"): str(region)
                               for region, urls in stack["routers"].items()  # type: ignore[attr-defined]
                               for url in urls}

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            workers = []
            for client, region in sorted(self._plan.clients.items()):
                for index in range(self._plan.workers_per_client):
                    region_client = RegionClient(self._stack, location=region)
                    workers.append(self._worker(session, region_client, f"{client}-{index + 1}", region, stop))
            await asyncio.gather(*workers)

    async def _worker(self, session: aiohttp.ClientSession, client: RegionClient, name: str, region: str,
                      stop: asyncio.Event) -> None:
        body = {"model": self._plan.model, "messages": [{"role": "user", "content": f"chaos from {name}"}],
                "max_tokens": self._plan.max_tokens}
        try:
            await client.connect()
        except NoRouterError:
            pass
        for _ in range(self._plan.max_requests_per_worker):
            if stop.is_set():
                return
            await self._one(session, client, name, region, body)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._plan.think_ms / 1000)
            except TimeoutError:
                pass

    async def _one(self, session: aiohttp.ClientSession, client: RegionClient, name: str, region: str,
                   body: dict[str, object]) -> None:
        router_url = client.current.url if client.current is not None else ""
        started = self._clock()
        perf = time.perf_counter()
        status, backend, backend_region, version, error = 0, None, None, None, None
        attempts, reason = None, None
        try:
            if not router_url:
                raise NoRouterError("no router chosen")
            async with session.post(f"{router_url}/v1/chat/completions", json=body) as response:
                payload = await response.read()
                status = response.status
                backend = response.headers.get("x-meridian-backend")
                backend_region = response.headers.get("x-meridian-region")
                raw_version = response.headers.get("x-meridian-table-version")
                version = int(raw_version) if raw_version and raw_version.isdigit() else None
                raw_attempts = response.headers.get("x-meridian-attempts")
                attempts = int(raw_attempts) if raw_attempts and raw_attempts.isdigit() else None
                reason = response.headers.get("x-meridian-reason")
                if status != 200:
                    error = payload[:200].decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError, NoRouterError, OSError) as failure:
            error = f"{type(failure).__name__}: {failure}"
        latency_ms = (time.perf_counter() - perf) * 1000
        self.records.append(RequestRecord(
            started, self._clock(), name.rsplit("-", 1)[0], region, self.router_regions.get(router_url, "?"),
            status, latency_ms, backend, backend_region, version, error, attempts, reason))
        if status == 0:
            try:
                await client.failover()
            except NoRouterError:
                pass
