"""A bounded closed-loop load generator: `concurrency` workers send `requests` requests in total, drawn ahead
from a workload (`meridian_common.workload`) so that the client spends no CPU drawing while it measures."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from harness.load import read_stream
from meridian_common.workload import RequestShape, WorkloadConfig, chat_body, draw


@dataclass(frozen=True, slots=True)
class LoadResult:
    latencies_ms: tuple[float, ...]
    errors: int
    elapsed_s: float

    @property
    def throughput_rps(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0


@dataclass(frozen=True, slots=True)
class StreamTiming:
    ttft_ms: float
    max_gap_ms: float
    chunks: int


def percentile(values: list[float] | tuple[float, ...], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


@dataclass(frozen=True, slots=True)
class BenchRequest:
    body: bytes
    stream: bool


def bench_request(model: str, shape: RequestShape, rng: random.Random) -> BenchRequest:
    return BenchRequest(orjson.dumps(chat_body(model, shape, rng)), shape.stream)


def chat_requests(model: str, workload: WorkloadConfig, count: int, seed: int = 0) -> tuple[BenchRequest, ...]:
    """`count` requests drawn from `workload` with a fixed seed: every run sends the same ones."""
    rng = random.Random(seed)
    return tuple(bench_request(model, draw(workload, rng), rng) for _ in range(count))


async def closed_loop(url: str, bodies: Sequence[BenchRequest], *, concurrency: int, requests: int,
                      timeout_s: float = 60.0, headers: dict[str, str] | None = None,
                      on_response: Callable[[aiohttp.ClientResponse], None] | None = None) -> LoadResult:
    """Request i sends `bodies[i % len(bodies)]`; a stream counts as an error unless it completed."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    request_headers = {"Content-Type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def worker() -> None:
            nonlocal sent, errors
            while sent < requests:
                request = bodies[sent % len(bodies)]
                sent += 1
                started = time.perf_counter()
                try:
                    async with session.post(url, data=request.body, headers=request_headers) as response:
                        payload = await response.read()
                        if on_response is not None:
                            on_response(response)
                        if response.status != 200 or (request.stream and not read_stream(payload).ok):
                            errors += 1
                            continue
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))),
                               timeout=timeout_s * max(1, requests // concurrency))
        elapsed = time.perf_counter() - started
    return LoadResult(tuple(latencies), errors, elapsed)


async def stream_timing(url: str, body: bytes, *, timeout_s: float = 60.0) -> StreamTiming:
    """Time to the first chunk and the largest gap between chunks of one streamed response."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        started = time.perf_counter()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            response.raise_for_status()
            arrivals: list[float] = []
            async for _ in response.content.iter_any():
                arrivals.append(time.perf_counter())
    if not arrivals:
        raise RuntimeError(f"{url} streamed no chunk")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return StreamTiming((arrivals[0] - started) * 1000, max(gaps, default=0.0) * 1000, len(arrivals))
