"""`meridian bench overhead`: what the router adds over calling a backend directly and over a bare
aiohttp pass-through, measured in one run so the machine's noise cancels out in the ratios: the CPU time per
request (and per streamed chunk) of each, from /proc under load from wrk (`cpu_cost`), and the latency added
at concurrency 1. The requests are drawn from the workload (long-tailed prompts and answers, half streamed in
the latency case; whole answers, then streams, in the CPU cases)."""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.call_count import ProfiledServer, calls_per_request
from benchmarks.cpu_cost import Target, measure, set_simulator
from benchmarks.decision import measure_decision_time
from benchmarks.load import (
    BenchRequest,
    LoadResult,
    bench_request,
    chat_requests,
    closed_loop,
    percentile,
    stream_timing,
)
from benchmarks.wrk_load import write_bodies, wrk_executable
from meridian_common.service_process import ServiceProcess, start_service
from meridian_common.workload import REALISTIC, WorkloadConfig, median_shape, simulator_flags

MODEL = "bench-model"
STREAM_ITL_MS = 20
# The CPU case paces tokens faster than a real server so that enough chunks pass in a few seconds for a per-chunk
# figure; every chunk is still a write of its own, relayed event by event.
STREAM_CPU_ITL_MS = 2
CPU_BODIES = 500  # requests drawn from the workload, which the load cycles through
CALL_COUNT_SECONDS = 5.0  # of load per profiled server: the count is exact, so a short run is enough


@dataclass(frozen=True, slots=True)
class OverheadSettings:
    requests: int = 2000
    concurrencies: tuple[int, ...] = (1,)
    decision_iterations: int = 20000
    stream_repeats: int = 5
    rounds: int = 3  # the targets take turns, so a burst of noise hits one round of each, not one target
    workload: WorkloadConfig = REALISTIC
    cpu_connections: int = 32
    cpu_seconds: float = 8.0  # per target per round
    workers: int = 1  # the router's --workers


def _router_config(sim_url: str) -> str:
    return f"""region: bench
listen: {{host: 127.0.0.1, port: 0}}
health_check: {{interval_s: 30}}
models:
  {MODEL}:
    policy: latency-first
    deployments:
      - name: sim-a
        url: {sim_url}/v1
        served_model: {MODEL}
        region: bench
        architecture: dense
        max_concurrency: 0
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "meridian_cli.main", *args]


def _start_stack(workdir: Path, itl_ms: int, workload: WorkloadConfig, workers: int = 1) -> list[ServiceProcess]:
    simulator = start_service(
        "simulator",
        _cli("sim-backend", "--port", "0", "--model", MODEL, "--ttft-ms", "0", "--itl-ms", str(itl_ms),
             "--capacity", "100000", *simulator_flags(workload)),
        workdir,
    )
    config = workdir / f"router-{itl_ms}.yaml"
    config.write_text(_router_config(simulator.url))
    passthrough = start_service("passthrough", _passthrough_argv(simulator.url), workdir, health_path=None)
    router = start_service("router", _router_argv(config, workers), workdir, health_path="/ready")
    return [simulator, passthrough, router]


def _passthrough_argv(simulator_url: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.passthrough", "--upstream", simulator_url]


def _router_argv(config: Path, workers: int = 1) -> list[str]:
    worker_flags = ("--workers", str(workers)) if workers > 1 else ()
    return _cli("router", "--config", str(config), "--port", "0", *worker_flags)


def _call_counts(simulator_url: str, workdir: Path, settings: OverheadSettings) -> dict[str, dict[str, float]]:
    """Python calls per whole-answer request of the pass-through and of the (single-process) router."""
    bodies = write_bodies(_bodies(settings.workload, stream_share=0.0), workdir / "call-count-bodies.txt")
    servers = (ProfiledServer("passthrough", _passthrough_argv(simulator_url), None),
               ProfiledServer("router", _router_argv(workdir / "router-0.yaml"), "/ready"))
    return {server.name: calls_per_request(server, bodies, workdir, connections=settings.cpu_connections,
                                           seconds=CALL_COUNT_SECONDS) for server in servers}


def _figures(rounds: list[LoadResult]) -> dict[str, float]:
    """Latency quantiles over every round's requests; throughput is the median round's."""
    latencies = [latency for result in rounds for latency in result.latencies_ms]
    return {
        "p50_ms": round(percentile(latencies, 50), 4),
        "p99_ms": round(percentile(latencies, 99), 4),
        "throughput_rps": round(statistics.median(r.throughput_rps for r in rounds), 1),
        "errors": sum(r.errors for r in rounds),
    }


async def run_overhead(settings: OverheadSettings, progress: Any = print) -> dict[str, Any]:
    decision_ns = measure_decision_time(settings.decision_iterations)
    figures: dict[str, Any] = {
        "decision_p50_us": round(percentile(decision_ns, 50) / 1000, 3),
        "decision_p99_us": round(percentile(decision_ns, 99) / 1000, 3),
        "requests_per_case": settings.requests,
        "cpu_connections": settings.cpu_connections,
        "router_workers": settings.workers,
        "workload": settings.workload.describe(),
    }
    bodies = chat_requests(MODEL, settings.workload, settings.requests)
    with tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp:
        workdir = Path(tmp)
        services = await asyncio.to_thread(_start_stack, workdir, 0, settings.workload, settings.workers)
        try:
            simulator, passthrough, router = services
            targets = {"direct": simulator.url, "passthrough": passthrough.url, "router": router.url}
            for concurrency in settings.concurrencies:
                rounds: dict[str, list[LoadResult]] = {name: [] for name in targets}
                for base in targets.values():
                    await closed_loop(f"{base}/v1/chat/completions", bodies, concurrency=concurrency,
                                      requests=min(200, settings.requests))  # warm-up
                for round_number in range(1, settings.rounds + 1):
                    progress(f"  concurrency {concurrency}: round {round_number}/{settings.rounds} "
                             f"({', '.join(targets)}) ...")
                    for name, base in targets.items():
                        rounds[name].append(await closed_loop(
                            f"{base}/v1/chat/completions", bodies, concurrency=concurrency,
                            requests=max(1, settings.requests // settings.rounds)))
                for name, results in rounds.items():
                    figures[f"c{concurrency}_{name}"] = _figures(results)
                direct, through_router = figures[f"c{concurrency}_direct"], figures[f"c{concurrency}_router"]
                figures[f"c{concurrency}_added_p50_ms"] = round(through_router["p50_ms"] - direct["p50_ms"], 4)
                figures[f"c{concurrency}_added_p99_ms"] = round(through_router["p99_ms"] - direct["p99_ms"], 4)
                figures[f"c{concurrency}_throughput_ratio_vs_passthrough"] = round(
                    through_router["throughput_rps"] / figures[f"c{concurrency}_passthrough"]["throughput_rps"], 3)
            progress(f"  CPU per request, whole answers, {settings.cpu_connections} connections:")
            cpu = await measure(_cpu_targets(passthrough, router), simulator.url,
                                _bodies(settings.workload, stream_share=0.0), connections=settings.cpu_connections,
                                seconds=settings.cpu_seconds, rounds=settings.rounds, workdir=workdir,
                                progress=progress)
            figures["cpu"] = cpu
            figures["router_cpu_us_per_request"] = cpu["router"]["cpu_us_per_request"]
            figures["passthrough_cpu_us_per_request"] = cpu["passthrough"]["cpu_us_per_request"]
            figures["cpu_ratio"] = _ratio(cpu["router"]["cpu_us_per_request"], cpu["passthrough"]["cpu_us_per_request"])
            figures["throughput_ratio"] = _ratio(cpu["router"]["throughput_rps"], cpu["passthrough"]["throughput_rps"])
            if wrk_executable() is not None:
                progress("  Python calls per request (cProfile), whole answers ...")
                calls = await asyncio.to_thread(_call_counts, simulator.url, workdir, settings)
                figures["calls"] = calls
                figures["router_calls_per_request"] = calls["router"]["calls_per_request"]
                figures["passthrough_calls_per_request"] = calls["passthrough"]["calls_per_request"]
                figures["calls_ratio"] = _ratio(calls["router"]["calls_per_request"],
                                                calls["passthrough"]["calls_per_request"])
        finally:
            for service in reversed(services):
                service.stop()
        services = await asyncio.to_thread(_start_stack, workdir, STREAM_ITL_MS, settings.workload, settings.workers)
        try:
            simulator, passthrough, router = services
            progress(f"  CPU per chunk, streams paced {STREAM_CPU_ITL_MS} ms a token, {settings.cpu_connections} "
                     "connections:")
            await asyncio.to_thread(set_simulator, simulator.url, itl_ms=STREAM_CPU_ITL_MS)
            streamed = await measure(_cpu_targets(passthrough, router), simulator.url,
                                     _bodies(settings.workload, stream_share=1.0),
                                     connections=settings.cpu_connections, seconds=settings.cpu_seconds,
                                     rounds=settings.rounds, workdir=workdir, progress=progress)
            await asyncio.to_thread(set_simulator, simulator.url, itl_ms=STREAM_ITL_MS)
            figures["stream_cpu"] = streamed
            figures["stream_router_cpu_us_per_chunk"] = streamed["router"]["cpu_us_per_chunk"]
            figures["stream_passthrough_cpu_us_per_chunk"] = streamed["passthrough"]["cpu_us_per_chunk"]
            figures["stream_cpu_ratio"] = _ratio(streamed["router"]["cpu_us_per_chunk"],
                                                 streamed["passthrough"]["cpu_us_per_chunk"])
            shape = median_shape(settings.workload, stream=True)
            progress(f"  streaming: {shape.answer_tokens} chunks {STREAM_ITL_MS} ms apart ...")
            stream_body = bench_request(MODEL, shape, random.Random(0)).body
            direct_runs, router_runs = [], []
            for _ in range(settings.stream_repeats):
                direct_runs.append(await stream_timing(f"{simulator.url}/v1/chat/completions", stream_body))
                router_runs.append(await stream_timing(f"{router.url}/v1/chat/completions", stream_body))
            figures["stream"] = {
                "chunks": shape.answer_tokens, "prompt_tokens": shape.prompt_tokens, "itl_ms": STREAM_ITL_MS,
                "direct_ttft_ms": round(min(r.ttft_ms for r in direct_runs), 3),
                "router_ttft_ms": round(min(r.ttft_ms for r in router_runs), 3),
                "added_ttft_ms": round(percentile([r.ttft_ms for r in router_runs], 50)
                                       - percentile([r.ttft_ms for r in direct_runs], 50), 3),
                "direct_max_gap_ms": round(max(r.max_gap_ms for r in direct_runs), 3),
                "router_max_gap_ms": round(max(r.max_gap_ms for r in router_runs), 3),
                "added_max_gap_ms": round(max(r.max_gap_ms for r in router_runs)
                                          - max(r.max_gap_ms for r in direct_runs), 3),
            }
        finally:
            for service in reversed(services):
                service.stop()
    return figures


TARGETS = {
    "decision_p99_us": ("<", 50.0),
    "c1_added_p50_ms": ("<=", 0.3),
    "cpu_ratio": ("<=", 1.33),
    "stream_cpu_ratio": ("<=", 1.2),
}


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else 0.0


def _cpu_targets(passthrough: ServiceProcess, router: ServiceProcess) -> dict[str, Target]:
    return {"passthrough": Target(passthrough.url, passthrough.pid), "router": Target(router.url, router.pid)}


def _bodies(workload: WorkloadConfig, *, stream_share: float) -> tuple[BenchRequest, ...]:
    """The workload's requests, all whole answers or all streams: the CPU of each kind is a target of its own."""
    return chat_requests(MODEL, workload.model_copy(update={"stream_share": stream_share}), CPU_BODIES)


def target_verdicts(figures: dict[str, Any]) -> list[tuple[str, float, str, float, bool]]:
    verdicts = []
    for key, (op, bound) in TARGETS.items():
        value = float(figures[key])
        verdicts.append((key, value, op, bound, value < bound if op == "<" else value <= bound))
    return verdicts


def format_table(figures: dict[str, Any]) -> str:
    lines = [f"workload: {figures['workload']}",
             f"decision time: p50 {figures['decision_p50_us']} µs, p99 {figures['decision_p99_us']} µs", ""]
    lines.append(f"{'case':<24}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'errors':>8}")
    for key, value in figures.items():
        if isinstance(value, dict) and "throughput_rps" in value:
            lines.append(f"{key:<24}{value['p50_ms']:>10}{value['p99_ms']:>10}{value['throughput_rps']:>10}"
                         f"{value['errors']:>8}")
    lines.append("")
    for key, value in figures.items():
        if key.endswith(("_added_p50_ms", "_added_p99_ms", "_ratio_vs_passthrough")):
            lines.append(f"{key:<40}{value}")
    cpu, streamed = figures["cpu"], figures["stream_cpu"]
    lines += ["", f"CPU per request, whole answers ({cpu['client']}, {figures['cpu_connections']} connections): router "
              f"{cpu['router']['cpu_us_per_request']} µs, pass-through {cpu['passthrough']['cpu_us_per_request']} µs: "
              f"ratio {figures['cpu_ratio']}; throughput {cpu['router']['throughput_rps']} against "
              f"{cpu['passthrough']['throughput_rps']} req/s: ratio {figures['throughput_ratio']}",
              f"CPU per streamed chunk: router {streamed['router']['cpu_us_per_chunk']} µs, pass-through "
              f"{streamed['passthrough']['cpu_us_per_chunk']} µs: ratio {figures['stream_cpu_ratio']}"]
    if "calls" in figures:
        lines.append(f"Python calls per request (cProfile): router {figures['router_calls_per_request']}, "
                     f"pass-through {figures['passthrough_calls_per_request']}: ratio {figures['calls_ratio']}")
    stream = figures["stream"]
    lines += ["", f"streaming ({stream['chunks']} chunks, {stream['itl_ms']} ms apart, a {stream['prompt_tokens']}-"
              f"token prompt): added TTFT "
              f"{stream['added_ttft_ms']} ms, largest gap {stream['router_max_gap_ms']} ms via router vs "
              f"{stream['direct_max_gap_ms']} ms direct (added {stream['added_max_gap_ms']} ms)", ""]
    for key, value, op, bound, ok in target_verdicts(figures):
        lines.append(f"{'PASS' if ok else 'MISS'}  {key} = {value} (target {op} {bound})")
    return "\n".join(lines)


def main_overhead(settings: OverheadSettings, progress: Any) -> dict[str, Any]:
    return asyncio.run(run_overhead(settings, progress))
