"""Load from wrk (C, one thread), when it is installed (`apt-get install wrk`): a client that costs the server's
machine little, so a benchmark measures the server rather than a Python load generator sharing its cores. The
request bodies are drawn from the workload and cycled by a small Lua script."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import BenchRequest

_LUA = """local bodies = {}
for line in io.lines(os.getenv("MERIDIAN_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", os.getenv("MERIDIAN_PATH"), {["Content-Type"] = "application/json"}, bodies[i])
end
"""
ANSWER_TIMEOUT_S = 60  # wrk's own default (2 s) would cut long streams and count them as errors
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_SUMMARY = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_PERCENTILE = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def wrk_executable() -> str | None:
    return shutil.which("wrk")


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers, and connect, read, write and timeout errors

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def parse_wrk_output(text: str) -> WrkResult:
    """wrk's report (run with --latency); raises ValueError naming what is missing."""
    summary = _SUMMARY.search(text)
    if summary is None:
        raise ValueError(f"no 'N requests in T' line in wrk's output: {text[-500:]!r}")
    quantiles = {q: float(value) * _UNITS_MS[unit] for q, value, unit in _PERCENTILE.findall(text)}
    if set(quantiles) != {"50", "99"}:
        raise ValueError(f"no 50% and 99% latency lines in wrk's output (run it with --latency): {text[-500:]!r}")
    errors = sum(int(n) for n in _NON_2XX.findall(text))
    if (sockets := _SOCKET_ERRORS.search(text)) is not None:
        errors += sum(int(n) for n in sockets.groups())
    return WrkResult(int(summary[1]), float(summary[2]) * _UNITS_MS[summary[3]] / 1000, quantiles["50"],
                     quantiles["99"], errors)


def write_bodies(requests: Sequence[BenchRequest], path: Path) -> Path:
    """One JSON body per line, as the Lua script reads them (a JSON body never holds a raw newline)."""
    path.write_bytes(b"".join(request.body + b"\n" for request in requests))
    return path


def run_wrk(url: str, bodies: Path, *, connections: int, duration_s: float, path: str = "/v1/chat/completions",
            workdir: Path) -> WrkResult:
    """`connections` connections on one thread for `duration_s`, POSTing the bodies in turn to `url` + `path`."""
    executable = wrk_executable()
    if executable is None:
        raise FileNotFoundError("wrk is not installed (apt-get install wrk)")
    script = workdir / "post.lua"
    script.write_text(_LUA)
    command = [executable, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
               f"--timeout={ANSWER_TIMEOUT_S}s", "-s", str(script), url]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False,
                              env={"MERIDIAN_BODIES": str(bodies), "MERIDIAN_PATH": path})
    if finished.returncode != 0:
        raise RuntimeError(f"wrk exited {finished.returncode}: {finished.stderr.strip()[-500:]}")
    return parse_wrk_output(finished.stdout)
