"""`meridian bench prefix-affinity`: does sending a prompt where its prefix was sent before pay? The same request
sequence (requests starting with one of K shared prefixes, then a prompt of their own) goes through a latency-first
router over N identical simulators twice, once with the router's prefix affinity and once without, each on fresh
simulators whose prefix caches start empty and hold only about 1/N of the prefixes. Each run reports the
simulators' prefix-cache hit rate (their vLLM counters), the time to first token of the streams as the client saw
it, each backend's share, and the router's prediction error (`/routing`'s size model)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.load import BenchRequest, chat_requests, percentile
from benchmarks.metrics_text import sample_totals
from data_plane.config import PrefixAffinityConfig
from harness.load import StreamReader
from meridian_common.service_process import ServiceProcess, start_service
from meridian_common.workload import REALISTIC, WorkloadConfig, simulator_flags

MODEL = "prefix-model"
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class PrefixAffinitySettings:
    deployments: int = 3
    requests: int = 300
    concurrency: int = 8
    shared_prefixes: int = 12
    shared_prefix_tokens: int = 3000
    # A dense model of about 70B on a few GPUs prefills on the order of 10k tokens a second: a 3k-token prefix
    # is then most of the first token's time, which is what a prefix-cache hit spares.
    prefill_ms_per_1k: float = 80.0
    # 256 blocks of 64 tokens: about 5 of the 12 prefixes of a mean 3,000 tokens, with room for the requests'
    # own prompts: one simulator cannot hold them all, N of them can if each keeps its share.
    prefix_cache_blocks: int = 256
    router_prefix_blocks: int | None = None
    """The router's `prefix_affinity.blocks_per_deployment`; None: its default (16,384, far more than these
    simulators hold, so it remembers prefixes they have evicted)."""
    ttft_ms: float = 40.0
    itl_ms: float = 5.0
    seed: int = 0
    run_timeout_s: float = 600.0
    workload: WorkloadConfig = REALISTIC
    """The rest of each request (its own prompt, its answer, streamed or not); the prefixes are added to it."""

    @property
    def shared_workload(self) -> WorkloadConfig:
        return self.workload.model_copy(update={"shared_prefixes": self.shared_prefixes,
                                                "shared_prefix_tokens": self.shared_prefix_tokens})


def _router_config(sim_urls: list[str], affinity: bool, blocks_per_deployment: int | None) -> str:
    deployments = "".join(f"""      - name: sim-{index + 1}
        url: {url}/v1
        served_model: {MODEL}
        region: bench
        architecture: dense
""" for index, url in enumerate(sim_urls))
    remembered = f", blocks_per_deployment: {blocks_per_deployment}" if blocks_per_deployment else ""
    return f"""region: bench
listen: {{host: 127.0.0.1, port: 0}}
health_check: {{interval_s: 30}}
prefix_affinity: {{enabled: {str(affinity).lower()}{remembered}}}
models:
  {MODEL}:
    policy: latency-first
    deployments:
{deployments}"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "meridian_cli.main", *args]


def _start_stack(workdir: Path, settings: PrefixAffinitySettings, affinity: bool) -> list[ServiceProcess]:
    services: list[ServiceProcess] = []
    try:
        for index in range(settings.deployments):
            services.append(start_service(f"simulator-{index + 1}", _cli(
                "sim-backend", "--port", "0", "--model", MODEL, "--profile", "dense",
                "--ttft-ms", str(settings.ttft_ms), "--itl-ms", str(settings.itl_ms),
                "--prefill-ms-per-1k", str(settings.prefill_ms_per_1k),
                "--prefix-cache-blocks", str(settings.prefix_cache_blocks), "--seed", str(settings.seed + index),
                *simulator_flags(settings.workload)), workdir))
        config = workdir / "router.yaml"
        config.write_text(_router_config([s.url for s in services], affinity, settings.router_prefix_blocks))
        services.append(start_service("router", _cli("router", "--config", str(config), "--port", "0"), workdir,
                                      health_path="/ready"))
    except BaseException:
        for service in reversed(services):
            service.stop()
        raise
    return services


@dataclass(frozen=True, slots=True)
class _Answer:
    ok: bool
    stream: bool
    ttft_ms: float | None
    backend: str | None


async def _send_all(url: str, requests: tuple[BenchRequest, ...], concurrency: int) -> list[_Answer]:
    """A closed loop: `concurrency` workers take the requests in order, so both runs send the same sequence."""
    answers: list[_Answer] = []
    pending = iter(requests)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        async def one(request: BenchRequest) -> _Answer:
            started = time.perf_counter()
            ttft_ms = None
            try:
                async with session.post(f"{url}/v1/chat/completions", data=request.body,
                                        headers={"Content-Type": "application/json"}) as response:
                    backend = response.headers.get("x-meridian-backend")
                    if not request.stream:
                        await response.read()
                        return _Answer(response.status == 200, False, None, backend)
                    reader = StreamReader()
                    async for data in response.content.iter_any():
                        reader.feed(data)
                        if ttft_ms is None and reader.content_chunks:
                            ttft_ms = (time.perf_counter() - started) * 1000
                    return _Answer(response.status == 200 and reader.finish().ok, True, ttft_ms, backend)
            except (aiohttp.ClientError, TimeoutError):
                return _Answer(False, request.stream, None, None)

        async def worker() -> None:
            for request in pending:
                answers.append(await one(request))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


def engine_counters(metrics_text: str) -> dict[str, float]:
    """A simulator's prefix-cache counters (tokens) and its time-to-first-token histogram's sum and count."""
    return sample_totals(metrics_text, {"vllm:prefix_cache_hits_total": "hits",
                                        "vllm:prefix_cache_queries_total": "queries",
                                        "vllm:time_to_first_token_seconds_sum": "ttft_sum_s",
                                        "vllm:time_to_first_token_seconds_count": "ttft_count"})


async def _read(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.text()


def size_model_errors(routing: dict[str, Any]) -> dict[str, float | None]:
    """The size model's mean absolute percentage errors and the size-blind means', over every deployment of every
    model, each deployment weighted by the answers it learned from."""
    errors: dict[str, float | None] = {}
    deployments = [d for model in routing["models"].values() for d in model["deployments"]]
    for figure in ("ttft", "tpot"):
        for key, name in (("mape", f"{figure}_mape"), ("size_blind_mape", f"{figure}_mape_size_blind")):
            weighted = [(d["size_model"][figure][key], d["size_model"][figure]["answers"]) for d in deployments
                        if d["size_model"][figure][key] is not None and d["size_model"][figure]["answers"]]
            total = sum(weight for _, weight in weighted)
            errors[name] = round(sum(value * weight for value, weight in weighted) / total, 4) if total else None
    return errors


def run_figures(answers: list[_Answer], counters: list[dict[str, float]], routing: dict[str, Any],
                elapsed_s: float) -> dict[str, Any]:
    """One run's figures: pure over what the run collected."""
    ttfts = [a.ttft_ms for a in answers if a.stream and a.ok and a.ttft_ms is not None]
    hits, queries = sum(c["hits"] for c in counters), sum(c["queries"] for c in counters)
    engine_ttft_count = sum(c["ttft_count"] for c in counters)
    shares = Counter(a.backend for a in answers if a.ok and a.backend)
    served = sum(shares.values())
    return {
        "requests": len(answers),
        "errors": sum(not a.ok for a in answers),
        "streams": len(ttfts),
        "hit_rate": round(hits / queries, 4) if queries else 0.0,
        "prefix_cache_hit_tokens": int(hits),
        "prefix_cache_query_tokens": int(queries),
        "mean_ttft_ms": round(sum(ttfts) / len(ttfts), 1) if ttfts else 0.0,
        "p50_ttft_ms": round(percentile(ttfts, 50), 1),
        "p95_ttft_ms": round(percentile(ttfts, 95), 1),
        "engine_mean_ttft_ms": round(sum(c["ttft_sum_s"] for c in counters) * 1000 / engine_ttft_count, 1)
        if engine_ttft_count else 0.0,
        "backend_share": {name: round(count / served, 3) for name, count in sorted(shares.items())},
        "elapsed_s": round(elapsed_s, 2),
        **size_model_errors(routing),
    }


async def _run(settings: PrefixAffinitySettings, requests: tuple[BenchRequest, ...], affinity: bool,
               workdir: Path) -> dict[str, Any]:
    services = await asyncio.to_thread(_start_stack, workdir, settings, affinity)
    try:
        *simulators, router = services
        started = time.perf_counter()
        answers = await asyncio.wait_for(_send_all(router.url, requests, settings.concurrency),
                                         timeout=settings.run_timeout_s)
        elapsed_s = time.perf_counter() - started
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            pages = await asyncio.gather(*(_read(session, f"{s.url}/metrics") for s in simulators))
            routing = json.loads(await _read(session, f"{router.url}/routing"))
    finally:
        for service in reversed(services):
            service.stop()
    return run_figures(answers, [engine_counters(page) for page in pages], routing, elapsed_s)


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


async def run_prefix_affinity(settings: PrefixAffinitySettings, progress: Callable[[str], None]) -> dict[str, Any]:
    workload = settings.shared_workload
    requests = chat_requests(MODEL, workload, settings.requests, seed=settings.seed)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="meridian-prefix-affinity-") as tmp:
        for name, affinity in (("with", True), ("without", False)):
            progress(f"  {name} prefix affinity: {settings.requests} requests at concurrency {settings.concurrency} "
                     f"over {settings.deployments} fresh simulators ...")
            runs[name] = await _run(settings, requests, affinity, Path(tmp) / name)
            run = runs[name]
            progress(f"    hit rate {run['hit_rate']:.1%}, mean TTFT {run['mean_ttft_ms']} ms, "
                     f"shares {run['backend_share']}, {run['errors']} errors, {run['elapsed_s']} s")
    with_, without = runs["with"], runs["without"]
    return {
        "workload": workload.describe(),
        "deployments": settings.deployments,
        "requests": settings.requests,
        "concurrency": settings.concurrency,
        "simulator": {"profile": "dense", "ttft_ms": settings.ttft_ms, "itl_ms": settings.itl_ms,
                      "prefill_ms_per_1k": settings.prefill_ms_per_1k,
                      "prefix_cache_blocks": settings.prefix_cache_blocks},
        "router_prefix_blocks": settings.router_prefix_blocks or PrefixAffinityConfig().blocks_per_deployment,
        "hit_rate_with": with_["hit_rate"],
        "hit_rate_without": without["hit_rate"],
        "hit_rate_ratio": _ratio(with_["hit_rate"], without["hit_rate"]),
        "mean_ttft_ms_with": with_["mean_ttft_ms"],
        "mean_ttft_ms_without": without["mean_ttft_ms"],
        "ttft_ratio": _ratio(with_["mean_ttft_ms"], without["mean_ttft_ms"]),
        "ttft_mape": with_["ttft_mape"],
        "ttft_mape_size_blind": with_["ttft_mape_size_blind"],
        "tpot_mape": with_["tpot_mape"],
        "tpot_mape_size_blind": with_["tpot_mape_size_blind"],
        "runs": runs,
    }


def format_table(figures: dict[str, Any]) -> str:
    runs = figures["runs"]
    sim = figures["simulator"]
    lines = [f"{figures['requests']} requests at concurrency {figures['concurrency']}, latency-first over "
             f"{figures['deployments']} dense simulators (TTFT {sim['ttft_ms']} ms + {sim['prefill_ms_per_1k']} ms "
             f"per 1k uncached prompt tokens, prefix cache {sim['prefix_cache_blocks']} blocks; the router remembers "
             f"{figures['router_prefix_blocks']} blocks per deployment)",
             f"workload: {figures['workload']}",
             f"{'':<34}{'with affinity':>16}{'without':>16}"]
    rows = [("prefix-cache hit rate", "hit_rate", "{:.1%}"), ("mean TTFT (streams, client) ms", "mean_ttft_ms", "{}"),
            ("p50 / p95 TTFT ms", None, ""), ("engine mean TTFT ms (all answers)", "engine_mean_ttft_ms", "{}"),
            ("TTFT MAPE size-aware / blind", None, "ttft"), ("TPOT MAPE size-aware / blind", None, "tpot"),
            ("errors", "errors", "{}"), ("elapsed s", "elapsed_s", "{}")]
    for label, key, fmt in rows:
        if key is not None:
            cells = [fmt.format(runs[name][key]) for name in ("with", "without")]
        elif fmt:
            cells = [f"{_pct(runs[name][f'{fmt}_mape'])} / {_pct(runs[name][f'{fmt}_mape_size_blind'])}"
                     for name in ("with", "without")]
        else:
            cells = [f"{runs[name]['p50_ttft_ms']} / {runs[name]['p95_ttft_ms']}" for name in ("with", "without")]
        lines.append(f"{label:<34}{cells[0]:>16}{cells[1]:>16}")
    for name in ("with", "without"):
        shares = ", ".join(f"{backend} {share:.0%}" for backend, share in runs[name]["backend_share"].items())
        lines.append(f"backend share {name + ' affinity' if name == 'with' else name}: {shares}")
    lines.append(f"hit rate with / without: {figures['hit_rate_ratio']}; mean TTFT with / without: "
                 f"{figures['ttft_ratio']}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main_prefix_affinity(settings: PrefixAffinitySettings, progress: Callable[[str], None]) -> dict[str, Any]:
    return asyncio.run(run_prefix_affinity(settings, progress))
