"""`meridian bench burst`: a burst of N times a deployment's capacity sent at once through a router, to
show the queue at work: the share served, how long requests waited, the clean 503s when the wait is not
allowed, and that the backend never ran more than its `max_concurrency`. The burst's requests are drawn from
the workload, so they hold a slot for as long as real answers do and some wait the length of a long one."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.load import BenchRequest, chat_requests, percentile
from harness.load import read_stream
from meridian_common.service_process import ServiceProcess, start_service
from meridian_common.workload import REALISTIC, WorkloadConfig, simulator_flags
from simulator.admin_client import read_sim_config

MODEL = "burst-model"


@dataclass(frozen=True, slots=True)
class BurstSettings:
    capacity: int = 8
    factor: int = 4
    queue_timeout_s: float = 30.0
    queue_size: int = 0  # 0: room for the whole burst
    ttft_ms: float = 50.0
    itl_ms: float = 5.0
    workload: WorkloadConfig = REALISTIC

    @property
    def requests(self) -> int:
        return self.capacity * self.factor


def _router_config(sim_url: str, settings: BurstSettings) -> str:
    size = settings.queue_size or settings.requests
    return f"""region: bench
listen: {{host: 127.0.0.1, port: 0}}
health_check: {{interval_s: 30}}
models:
  {MODEL}:
    queue: {{size: {size}, timeout_s: {settings.queue_timeout_s}}}
    deployments:
      - name: sim-a
        url: {sim_url}/v1
        served_model: {MODEL}
        region: bench
        max_concurrency: {settings.capacity}
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "meridian_cli.main", *args]


def _start_stack(workdir: Path, settings: BurstSettings) -> list[ServiceProcess]:
    # The simulator could take far more than the router may send: its peak shows what the router sent.
    simulator = start_service("simulator", _cli(
        "sim-backend", "--port", "0", "--model", MODEL, "--ttft-ms", str(settings.ttft_ms),
        "--itl-ms", str(settings.itl_ms), *simulator_flags(settings.workload),
        "--capacity", str(max(1000, settings.requests * 2))), workdir)
    config = workdir / "router.yaml"
    config.write_text(_router_config(simulator.url, settings))
    router = start_service("router", _cli("router", "--config", str(config), "--port", "0"), workdir,
                           health_path="/ready")
    return [simulator, router]


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: int
    """0 for a stream that did not complete."""
    queue_wait_ms: float
    elapsed_ms: float
    retry_after: bool


async def _burst(url: str, settings: BurstSettings) -> tuple[list[_Outcome], float]:
    requests = chat_requests(MODEL, settings.workload, settings.requests)
    timeout = aiohttp.ClientTimeout(total=settings.queue_timeout_s + 60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        async def one(request: BenchRequest) -> _Outcome:
            started = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", data=request.body,
                                    headers={"Content-Type": "application/json"}) as response:
                payload = await response.read()
                elapsed_ms = (time.perf_counter() - started) * 1000
                waited = response.headers.get("x-meridian-queue-wait-ms")
                # A rejected request waited its whole time in the queue.
                wait_ms = float(waited) if waited is not None else (elapsed_ms if response.status == 503 else 0.0)
                complete = response.status != 200 or not request.stream or read_stream(payload).ok
                return _Outcome(response.status if complete else 0, wait_ms, elapsed_ms,
                                "Retry-After" in response.headers)

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(request) for request in requests))
        return list(outcomes), time.perf_counter() - started


def figures_of(outcomes: list[_Outcome], elapsed_s: float, peak: int, settings: BurstSettings) -> dict[str, Any]:
    served = [o for o in outcomes if o.status == 200]
    rejected = [o for o in outcomes if o.status == 503]
    waits = [o.queue_wait_ms for o in outcomes]
    return {
        "requests": len(outcomes),
        "capacity": settings.capacity,
        "factor": settings.factor,
        "queue_timeout_s": settings.queue_timeout_s,
        "workload": settings.workload.describe(),
        "backend_request_ms": round(settings.ttft_ms + settings.itl_ms * (settings.workload.answer_tokens_median - 1),
                                    1),
        "served": len(served),
        "served_ratio": round(len(served) / len(outcomes), 4) if outcomes else 0.0,
        "rejected": len(rejected),
        "rejected_with_retry_after": sum(o.retry_after for o in rejected),
        "other_errors": len(outcomes) - len(served) - len(rejected),
        "queue_wait_p50_ms": round(percentile(waits, 50), 1),
        "queue_wait_p99_ms": round(percentile(waits, 99), 1),
        "latency_p99_ms": round(percentile([o.elapsed_ms for o in outcomes], 99), 1),
        "elapsed_s": round(elapsed_s, 3),
        "peak_backend_concurrency": peak,
        "max_concurrency": settings.capacity,
    }


async def run_burst(settings: BurstSettings, progress: Any = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meridian-burst-") as tmp:
        services = await asyncio.to_thread(_start_stack, Path(tmp), settings)
        try:
            simulator, router = services
            progress(f"  burst of {settings.requests} requests ({settings.factor}x capacity {settings.capacity}), "
                     f"queue timeout {settings.queue_timeout_s} s ...")
            outcomes, elapsed_s = await _burst(router.url, settings)
            sim = await asyncio.to_thread(read_sim_config, simulator.url)
        finally:
            for service in reversed(services):
                service.stop()
    return figures_of(outcomes, elapsed_s, int(sim["peak_running"]), settings)


def format_table(figures: dict[str, Any]) -> str:
    rows = [
        ("burst", f"{figures['requests']} requests = {figures['factor']} x capacity {figures['capacity']} "
                  f"(backend request ~{figures['backend_request_ms']} ms for a median answer)"),
        ("workload", figures["workload"]),
        ("queue timeout", f"{figures['queue_timeout_s']} s"),
        ("served", f"{figures['served']} ({figures['served_ratio']:.0%})"),
        ("rejected (503)", f"{figures['rejected']} ({figures['rejected_with_retry_after']} with Retry-After)"),
        ("other errors", str(figures["other_errors"])),
        ("queue wait p50 / p99", f"{figures['queue_wait_p50_ms']} ms / {figures['queue_wait_p99_ms']} ms"),
        ("latency p99", f"{figures['latency_p99_ms']} ms"),
        ("whole burst", f"{figures['elapsed_s']} s"),
        ("peak backend concurrency", f"{figures['peak_backend_concurrency']} (max_concurrency "
                                     f"{figures['max_concurrency']})"),
    ]
    return "\n".join(f"{name:<26}{value}" for name, value in rows)


def main_burst(settings: BurstSettings, progress: Any) -> dict[str, Any]:
    return asyncio.run(run_burst(settings, progress))
