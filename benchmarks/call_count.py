"""Python function calls per request of a server, counted by cProfile while wrk loads it: unlike CPU time, a
count that does not move with the machine's noise, so a change to the request path shows its effect in one run.
A server is started twice under the profiler, once idle and once under load; the difference, over the requests
answered, leaves out what starting and stopping cost."""

from __future__ import annotations

import pstats
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.wrk_load import run_wrk
from meridian_common.service_process import start_service


@dataclass(frozen=True, slots=True)
class ProfiledServer:
    name: str
    argv: Sequence[str]  # `python -m module ...`, as start_service runs it
    health_path: str | None


def profiled_argv(argv: Sequence[str], stats_path: Path) -> list[str]:
    """`argv` run under cProfile, which writes its statistics to `stats_path` when the server exits (SIGTERM)."""
    python, flag, *module_and_args = argv
    if flag != "-m":
        raise ValueError(f"a profiled server is started as `python -m module`, got {list(argv)}")
    return [python, "-m", "cProfile", "-o", str(stats_path), "-m", *module_and_args]


def total_calls(stats_path: Path) -> int:
    return pstats.Stats(str(stats_path)).total_calls


def _profiled_run(server: ProfiledServer, workdir: Path, tag: str, load: Path | None, *, connections: int,
                  seconds: float) -> tuple[int, int]:
    """(calls, requests answered) of one profiled run of `server`, loaded with the bodies in `load` if given."""
    stats_path = workdir / f"{server.name}-{tag}.prof"
    service = start_service(f"{server.name}-profiled-{tag}", profiled_argv(server.argv, stats_path), workdir,
                            health_path=server.health_path)
    requests = 0
    try:
        if load is not None:
            requests = run_wrk(service.url, load, connections=connections, duration_s=seconds,
                               workdir=workdir).requests
    finally:
        service.stop(timeout_s=15.0)
    return total_calls(stats_path), requests


def calls_per_request(server: ProfiledServer, bodies: Path, workdir: Path, *, connections: int,
                      seconds: float) -> dict[str, float]:
    idle_calls, _ = _profiled_run(server, workdir, "idle", None, connections=connections, seconds=seconds)
    loaded_calls, requests = _profiled_run(server, workdir, "loaded", bodies, connections=connections,
                                           seconds=seconds)
    if requests == 0:
        raise RuntimeError(f"{server.name} answered no request under the profiler")
    return {"requests": requests, "calls_per_request": round(max(0, loaded_calls - idle_calls) / requests, 1)}
