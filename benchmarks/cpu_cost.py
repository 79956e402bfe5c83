"""CPU time per request (and per streamed chunk) of the servers under test, from /proc, under load from wrk
when it is installed: the figure that tells what a server costs even on a noisy machine. Without wrk a Python
closed loop takes its place, and the figures say they are client-bound: it shares the cores it measures."""

from __future__ import annotations

import asyncio
import json
import statistics
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.load import BenchRequest, closed_loop
from benchmarks.metrics_text import sample_totals
from benchmarks.proc_stats import tree_cpu_by_process
from benchmarks.wrk_load import run_wrk, write_bodies, wrk_executable

WARM_UP_S = 2.0


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    pid: int  # its process; its descendants (workers) count too


@dataclass(frozen=True, slots=True)
class CpuRun:
    requests: int
    errors: int
    cpu_s: float
    duration_s: float
    chunks: int  # tokens the backend generated meanwhile: the chunks of the streams
    cpu_by_process: dict[int, float]  # each process of the target's tree (a worker pool's parent and workers)

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.requests if self.requests else 0.0

    @property
    def cpu_us_per_chunk(self) -> float:
        return self.cpu_s * 1e6 / self.chunks if self.chunks else 0.0


def set_simulator(simulator_url: str, **changes: float) -> None:
    """Changes a running simulator's settings (`POST /sim/config`)."""
    request = urllib.request.Request(f"{simulator_url}/sim/config", data=json.dumps(changes).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def generated_tokens(backend_url: str) -> int:
    """The backend's `vllm:generation_tokens_total`, summed over its series (0 when it has none)."""
    with urllib.request.urlopen(f"{backend_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return round(sample_totals(text, {"vllm:generation_tokens_total": "tokens"})["tokens"])


async def _load(target: Target, bodies: Sequence[BenchRequest], body_file: Path, connections: int, seconds: float,
                workdir: Path) -> tuple[int, int, float]:
    """(requests answered, errors, seconds) of one run against `target`."""
    if wrk_executable() is not None:
        result = await asyncio.to_thread(run_wrk, target.url, body_file, connections=connections, duration_s=seconds,
                                         workdir=workdir)
        return result.requests, result.errors, result.duration_s
    count = max(connections, round(seconds * 500))  # about what a Python client sustains on these cores
    loaded = await closed_loop(f"{target.url}/v1/chat/completions", bodies, concurrency=connections, requests=count)
    return len(loaded.latencies_ms), loaded.errors, loaded.elapsed_s


async def measure(targets: Mapping[str, Target], backend_url: str, bodies: Sequence[BenchRequest], *,
                  connections: int, seconds: float, rounds: int, workdir: Path,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    """Each target's CPU per request and per generated chunk, its throughput and errors; the targets take turns
    `rounds` times (a burst of noise hits one round of each) and each figure is the median round's."""
    body_file = write_bodies(bodies, workdir / "bodies.jsonl")
    runs: dict[str, list[CpuRun]] = {name: [] for name in targets}
    for target in targets.values():
        await _load(target, bodies, body_file, connections, WARM_UP_S, workdir)
    for round_number in range(1, rounds + 1):
        progress(f"    round {round_number}/{rounds} ({', '.join(targets)}) ...")
        for name, target in targets.items():
            tokens_before, cpu_before = generated_tokens(backend_url), tree_cpu_by_process(target.pid)
            requests, errors, duration_s = await _load(target, bodies, body_file, connections, seconds, workdir)
            used = {pid: cpu_s - cpu_before.get(pid, 0.0) for pid, cpu_s in tree_cpu_by_process(target.pid).items()}
            chunks = generated_tokens(backend_url) - tokens_before
            runs[name].append(CpuRun(requests, errors, sum(used.values()), duration_s, chunks, used))
    figures: dict[str, Any] = {"client": "wrk" if wrk_executable() is not None else "python (client-bound)"}
    for name, measured in runs.items():
        figures[name] = {
            "cpu_us_per_request": round(statistics.median(r.cpu_us_per_request for r in measured), 1),
            "cpu_us_per_chunk": round(statistics.median(r.cpu_us_per_chunk for r in measured), 2),
            "throughput_rps": round(statistics.median(r.requests / r.duration_s for r in measured), 1),
            "errors": sum(r.errors for r in measured),
            # How the work spread over the target's processes (a worker pool's), in the median round by CPU.
            "cpu_share_by_process": _shares(sorted(measured, key=lambda r: r.cpu_s)[len(measured) // 2]),
        }
    return figures


def _shares(run: CpuRun) -> list[float]:
    """Each process's share of the run's CPU, largest first."""
    if run.cpu_s <= 0:
        return []
    return sorted((round(cpu_s / run.cpu_s, 3) for cpu_s in run.cpu_by_process.values()), reverse=True)
