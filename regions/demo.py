"""`meridian demo` (single region): simulated backends of three architectures behind one router, traffic
sent with the official `openai` SDK under several policies, then a backend failure absorbed. Prints
what went where."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai

from meridian_common.service_process import ServiceProcess, start_service

MODEL = "demo-model"


@dataclass(frozen=True, slots=True)
class DemoBackend:
    name: str
    profile: str
    ttft_ms: int
    itl_ms: int
    capacity: int
    cost_in: float
    cost_out: float
    quality: float


BACKENDS = (
    DemoBackend("dense-a", "dense", 60, 6, 32, 0.10, 0.20, 0.80),
    DemoBackend("moe-b", "moe", 30, 4, 32, 0.30, 0.60, 0.85),
    DemoBackend("linear-c", "linear-attention", 15, 3, 16, 0.60, 1.20, 0.75),
)

PHASES = (
    ("latency-first: the fastest deployment by live p95", {"x-meridian-policy": "latency-first"}),
    ("cost-first under a 400 ms budget: the cheapest that meets it",
     {"x-meridian-policy": "cost-first", "x-latency-budget-ms": "400"}),
    ("scored, priority quality", {"x-meridian-policy": "scored", "x-meridian-priority": "quality"}),
    ("round-robin baseline", {"x-meridian-policy": "round-robin"}),
)


def _router_config(backends: dict[str, ServiceProcess]) -> str:
    deployments = "\n".join(
        f"""      - name: {b.name}
        url: {backends[b.name].url}/v1
        served_model: {MODEL}
        region: local
        architecture: {b.profile}
        cost_per_1m_input: {b.cost_in}
        cost_per_1m_output: {b.cost_out}
        quality: {b.quality}
        max_concurrency: {b.capacity}"""
        for b in BACKENDS
    )
    return f"""region: local
listen: {{host: 127.0.0.1, port: 0}}
health_check: {{interval_s: 1, healthy_after: 2}}
models:
  {MODEL}:
    policy: latency-first
    breaker: {{error_rate_threshold: 0.3, min_requests: 3, open_duration_s: 3, window_s: 5}}
    deployments:
{deployments}
"""


async def _send(client: openai.AsyncOpenAI, headers: dict[str, str], requests: int, concurrency: int
                ) -> tuple[Counter[str], int, list[float]]:
    served: Counter[str] = Counter()
    errors = 0
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=[{"role": "user", "content": "Tell me about routers."}],
                    max_tokens=12, extra_headers=headers)
            except openai.APIError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            served[raw.headers.get("x-meridian-backend", "?")] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return served, errors, latencies


def _share_line(served: Counter[str], errors: int, latencies: list[float]) -> str:
    total = sum(served.values()) or 1
    architecture = {b.name: b.profile for b in BACKENDS}
    shares = ", ".join(f"{name} ({architecture.get(name, '?')}) {count * 100 // total}%"
                       for name, count in served.most_common())
    p50 = sorted(latencies)[len(latencies) // 2] if latencies else 0.0
    return f"    served by: {shares}; client errors: {errors}; p50 {p50:.0f} ms"


async def _breakers(router_url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{router_url}/routing") as response:
        routing = await response.json()
    return ", ".join(f"{d['name']}={d['breaker']}" for d in routing["models"][MODEL]["deployments"])


async def _run(router: ServiceProcess, backends: dict[str, ServiceProcess], say: Callable[[str], None],
               requests: int) -> int:
    client = openai.AsyncOpenAI(base_url=f"{router.url}/v1", api_key="demo", max_retries=0)
    total_errors = 0
    for title, headers in PHASES:
        say(f"\n== {title}")
        served, errors, latencies = await _send(client, headers, requests, concurrency=4)
        total_errors += errors
        say(_share_line(served, errors, latencies))
    fastest = "linear-c"
    say(f"\n== failure: {fastest} starts answering HTTP 500 to every request")
    async with aiohttp.ClientSession() as session:
        await (await session.post(f"{backends[fastest].url}/sim/config", json={"error_rate": 1.0})).read()
    served, errors, latencies = await _send(client, {"x-meridian-policy": "latency-first"}, requests, 4)
    total_errors += errors
    say(_share_line(served, errors, latencies))
    say(f"    breakers: {await _breakers(router.url)}")
    say("    (failed attempts were retried on the next candidate before any byte reached the client)")
    async with aiohttp.ClientSession() as session:
        await (await session.post(f"{backends[fastest].url}/sim/config", json={"error_rate": 0.0})).read()
    say(f"\n== recovery: {fastest} healthy again; its breaker half-opens after 3 s and a trial closes it")
    await asyncio.sleep(3.5)
    served, errors, latencies = await _send(client, {"x-meridian-policy": "latency-first"}, requests, 4)
    total_errors += errors
    say(_share_line(served, errors, latencies))
    say(f"    breakers: {await _breakers(router.url)}")
    await client.close()
    return total_errors


def run_demo(requests_per_phase: int = 60, say: Callable[[str], None] = print) -> int:
    with tempfile.TemporaryDirectory(prefix="meridian-demo-") as tmp:
        workdir = Path(tmp)
        services: list[ServiceProcess] = []
        try:
            say("starting simulated backends: " + ", ".join(f"{b.name} ({b.profile})" for b in BACKENDS))
            backends = {}
            for b in BACKENDS:
                backends[b.name] = start_service(b.name, [
                    sys.executable, "-m", "meridian_cli.main", "sim-backend", "--port", "0", "--model", MODEL,
                    "--profile", b.profile, "--ttft-ms", str(b.ttft_ms), "--itl-ms", str(b.itl_ms),
                    "--capacity", str(b.capacity), "--seed", "7"], workdir)
                services.append(backends[b.name])
            config = workdir / "router.yaml"
            config.write_text(_router_config(backends))
            router = start_service("router", [sys.executable, "-m", "meridian_cli.main", "router", "--config",
                                              str(config), "--port", "0"], workdir, health_path="/ready")
            services.append(router)
            say(f"router listening on {router.url}; clients use base_url={router.url}/v1")
            errors = asyncio.run(_run(router, backends, say, requests_per_phase))
            say(f"\ndemo finished: {errors} client errors in total")
            return 0 if errors == 0 else 1
        finally:
            for service in reversed(services):
                service.stop()
