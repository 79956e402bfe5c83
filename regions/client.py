"""Nearest-region selection for clients: measure the round trip to every healthy router, keep the nearest,
and move to the next nearest when the one in use stops answering.

On one machine every router is on 127.0.0.1, so the measured round trip is near 0 for all of them. A
simulated client therefore has a location (a region of the topology) and its distance to a router is the
measured round trip plus the topology's RTT between its location and the router's region. A real client
passes no location and the measurement alone decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from regions import stack_file

PROBE_TIMEOUT_S = 1.0
PROBE_SAMPLES = 3
DIRECTORY_TIMEOUT_S = 2.0

RttTable = Mapping[str, Mapping[str, float]]


class NoRouterError(RuntimeError):
    """No router answered; the message says where they were looked for."""


@dataclass(frozen=True, slots=True)
class RouterCandidate:
    region: str
    url: str
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class RouterChoice:
    region: str
    url: str
    rtt_ms: float
    """measured round trip + the topology RTT from the client's location (when it has one)."""
    measured_ms: float

    @property
    def base_url(self) -> str:
        """What the OpenAI SDK takes as `base_url`."""
        return f"{self.url}/v1"


# --- pure ranking ------------------------------------------------------------------------------------------------

def simulated_rtt_ms(rtt: RttTable | None, location: str | None, region: str) -> float:
    """The topology's RTT between a simulated client's location and a region (0 for a real client)."""
    if rtt is None or location is None:
        return 0.0
    return float(rtt.get(location, {}).get(region, 0.0))


def rank(measured: Mapping[RouterCandidate, float | None], *, location: str | None = None,
         rtt: RttTable | None = None, exclude: Iterable[str] = ()) -> list[RouterChoice]:
    """Healthy, answering routers that are not excluded, nearest first (ties by URL, so the order is stable)."""
    excluded = {u.rstrip("/") for u in exclude}
    choices = [
        RouterChoice(c.region, c.url, m + simulated_rtt_ms(rtt, location, c.region), m)
        for c, m in measured.items()
        if c.healthy and m is not None and c.url not in excluded
    ]
    return sorted(choices, key=lambda choice: (choice.rtt_ms, choice.url))


def candidates_from_stack(stack: Mapping[str, Any]) -> list[RouterCandidate]:
    return [RouterCandidate(region, url.rstrip("/")) for region, urls in stack["routers"].items() for url in urls]


def candidates_from_directory(body: Mapping[str, Any]) -> list[RouterCandidate]:
    return [RouterCandidate(region, str(entry["url"]).rstrip("/"), bool(entry.get("healthy")))
            for region, entries in body.get("regions", {}).items() for entry in entries]


# --- measurement ----------------------------------------------------------------------------------------------------

async def measure_rtt(url: str, *, session: aiohttp.ClientSession | None = None, samples: int = PROBE_SAMPLES,
                      timeout_s: float = PROBE_TIMEOUT_S) -> float | None:
    """The smallest of `samples` round trips of `GET {url}/health` in ms, None when it never answers 200.
    The first probe also opens the connection; the minimum keeps that cost out."""
    own = session is None
    session = session or aiohttp.ClientSession()
    best: float | None = None
    try:
        for _ in range(max(1, samples)):
            started = time.perf_counter()
            try:
                async with session.get(f"{url.rstrip('/')}/health",
                                       timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                    await response.read()
                    if response.status != 200:
                        return None
            except (aiohttp.ClientError, TimeoutError, OSError):
                return None
            elapsed = (time.perf_counter() - started) * 1000
            best = elapsed if best is None else min(best, elapsed)
    finally:
        if own:
            await session.close()
    return best


async def _directory(session: aiohttp.ClientSession, urls: Sequence[str]) -> dict[str, Any] | None:
    """The first `GET /v1/regions` answer among `urls`."""
    for url in urls:
        try:
            async with session.get(f"{url.rstrip('/')}/v1/regions",
                                   timeout=aiohttp.ClientTimeout(total=DIRECTORY_TIMEOUT_S)) as response:
                if response.status == 200:
                    body = await response.json()
                    if isinstance(body, dict):
                        return body
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            continue
    return None


Source = str | Sequence[str] | Mapping[str, Any] | Path
"""A router URL (or several) whose /v1/regions lists every router, a stack.json's content, or a directory
holding `.meridian/stack.json`."""


async def _candidates(session: aiohttp.ClientSession, source: Source) -> tuple[list[RouterCandidate], RttTable | None]:
    if isinstance(source, Path):
        source = stack_file.find_stack(source)
    if isinstance(source, Mapping):
        rtt = {region: info["rtt_ms"] for region, info in source.get("regions", {}).items()}
        urls = [c.url for c in candidates_from_stack(source)]
        body = await _directory(session, urls)
        # The directory knows which routers are healthy; without one, measuring decides.
        return (candidates_from_directory(body) if body else candidates_from_stack(source)), rtt
    urls = [source] if isinstance(source, str) else list(source)
    body = await _directory(session, urls)
    if body is None:
        raise NoRouterError(f"no router answered GET /v1/regions at {', '.join(urls)}")
    return candidates_from_directory(body), None


async def ranked_routers(source: Source, *, location: str | None = None, rtt: RttTable | None = None,
                         exclude: Iterable[str] = ()) -> list[RouterChoice]:
    """Every healthy router nearest first. `location` is a simulated client's region; its RTTs come from
    `rtt`, else from the stack file when `source` is one."""
    async with aiohttp.ClientSession() as session:
        candidates, stack_rtt = await _candidates(session, source)
        excluded = {u.rstrip("/") for u in exclude}
        probed = [c for c in candidates if c.healthy and c.url not in excluded]
        results = await asyncio.gather(*(measure_rtt(c.url, session=session) for c in probed))
    table = rtt if rtt is not None else stack_rtt
    if location is not None and (table is None or location not in table):
        raise ValueError(f"unknown client location {location!r}: no RTT from it in the topology")
    return rank(dict(zip(probed, results, strict=True)), location=location, rtt=table, exclude=excluded)


async def nearest_router(source: Source, *, location: str | None = None, rtt: RttTable | None = None,
                         exclude: Iterable[str] = ()) -> RouterChoice:
    """The nearest healthy router; raises NoRouterError when none answers."""
    ranked = await ranked_routers(source, location=location, rtt=rtt, exclude=exclude)
    if not ranked:
        raise NoRouterError("no healthy router answered")
    return ranked[0]


class RegionClient:
    """Keeps the nearest router and fails over to the next nearest on a connection error.

    `post_json` does the failover itself; users of another HTTP client (the OpenAI SDK) read `base_url` and
    call `failover()` when a request could not connect.
    """

    def __init__(self, source: Source, *, location: str | None = None, rtt: RttTable | None = None,
                 max_failovers: int = 8) -> None:
        self._source = source
        self._location = location
        self._rtt = rtt
        self._max_failovers = max_failovers
        self._failed: list[str] = []
        self.current: RouterChoice | None = None

    @property
    def base_url(self) -> str:
        if self.current is None:
            raise NoRouterError("no router chosen yet: await connect() first")
        return self.current.base_url

    async def connect(self) -> RouterChoice:
        """Chooses the nearest healthy router; routers that failed before are tried only when none other is left."""
        try:
            self.current = await nearest_router(self._source, location=self._location, rtt=self._rtt,
                                                exclude=self._failed)
        except NoRouterError:
            self._failed.clear()
            self.current = await nearest_router(self._source, location=self._location, rtt=self._rtt)
        return self.current

    async def failover(self) -> RouterChoice:
        """The current router failed: move to the next nearest healthy one."""
        if self.current is not None:
            self._failed.append(self.current.url)
        return await self.connect()

    async def post_json(self, session: aiohttp.ClientSession, path: str, body: Any, *,
                        headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """POSTs to the current router (`path` after the router URL, e.g. `/v1/chat/completions`), failing over
        on connection errors; an HTTP error status is returned, not retried."""
        if self.current is None:
            await self.connect()
        last_error: Exception | None = None
        for _ in range(self._max_failovers + 1):
            assert self.current is not None
            try:
                async with session.post(f"{self.current.url}{path}", json=body, headers=headers) as response:
                    payload = await response.json(content_type=None)
                    return response.status, dict(response.headers), payload
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                last_error = error
                await self.failover()
        raise NoRouterError(f"every router failed: {last_error}")
