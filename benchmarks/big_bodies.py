"""`meridian bench big-bodies`: a few request bodies as large as the router takes, sent at once, while `/health`
is polled: how far the router's memory rises (its peak RSS over the run, from /proc) and how long `/health`
waits behind the bodies being read and parsed. Each shape is a round of its own: the shape of the issue that
prompted the bound (`[{},{},...]`, millions of empty messages), one long message, and millions of tiny content
parts (a valid body as dense as it gets)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.load import percentile
from meridian_common.service_process import ServiceProcess, start_service

MiB = 1024 * 1024
MODEL = "big-bodies-model"
SERVED_MODEL = "served/big-bodies-model"  # unlike the client's name, so the router re-encodes the body it forwards


@dataclass(frozen=True, slots=True)
class BodyShape:
    """A body made of `head`, `item` repeated with `separator` between, and `tail`."""

    head: bytes
    item: bytes
    separator: bytes
    tail: bytes

    def of_size(self, size_bytes: int) -> bytes:
        """The body as close to `size_bytes` as its items allow, never over it."""
        room = size_bytes - len(self.head) - len(self.tail) + len(self.separator)
        return self.head + self.separator.join([self.item] * (room // (len(self.item) + len(self.separator)))) + \
            self.tail


_CHAT = b'{"model":"%s","max_tokens":1,"messages":' % MODEL.encode()
SHAPES = {
    "empty-objects": BodyShape(_CHAT + b"[", b"{}", b",", b"]}"),
    "long-text": BodyShape(_CHAT + b'[{"role":"user","content":"', b"abcd", b"", b'"}]}'),
    "tiny-parts": BodyShape(_CHAT + b'[{"role":"user","content":[', b'{"type":"text","text":"ab"}', b",", b"]}]}"),
}


@dataclass(frozen=True, slots=True)
class BigBodiesSettings:
    bodies: int = 4
    body_mib: float = 16.0
    shapes: tuple[str, ...] = tuple(SHAPES)
    health_interval_s: float = 0.01


def _router_config(sim_url: str, max_body_bytes: int, bodies: int) -> str:
    return f"""region: bench
listen: {{host: 127.0.0.1, port: 0}}
max_body_bytes: {max_body_bytes}
request_bodies: {{in_flight_bytes: {max(64 * MiB, max_body_bytes * bodies)}}}
health_check: {{interval_s: 30}}
models:
  {MODEL}:
    deployments:
      - name: sim-a
        url: {sim_url}/v1
        served_model: {SERVED_MODEL}
        region: bench
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "meridian_cli.main", *args]


def _start_stack(workdir: Path, settings: BigBodiesSettings) -> list[ServiceProcess]:
    simulator = start_service("simulator", _cli("sim-backend", "--port", "0", "--model", SERVED_MODEL,
                                                "--ttft-ms", "0", "--itl-ms", "0"), workdir)
    config = workdir / "router.yaml"
    config.write_text(_router_config(simulator.url, int(settings.body_mib * MiB), settings.bodies))
    router = start_service("router", _cli("router", "--config", str(config), "--port", "0"), workdir,
                           health_path="/ready")
    return [simulator, router]


def _memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def _reset_peak(pid: int) -> bool:
    """Resets the process's VmHWM to its current RSS (Linux: 5 to clear_refs); False where that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _round(url: str, pid: int, body: bytes, settings: BigBodiesSettings) -> dict[str, Any]:
    health_ms: list[float] = []
    sampled_peak_kib = 0
    done = asyncio.Event()
    baseline_kib = _memory_kib(pid)["VmRSS"]
    peak_reset = _reset_peak(pid)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as bodies_session, \
            aiohttp.ClientSession(timeout=timeout) as health_session:
        async def poll_health() -> None:
            nonlocal sampled_peak_kib
            while not done.is_set():
                started = time.perf_counter()
                async with health_session.get(f"{url}/health") as response:
                    await response.read()
                health_ms.append((time.perf_counter() - started) * 1000)
                sampled_peak_kib = max(sampled_peak_kib, _memory_kib(pid)["VmRSS"])
                await asyncio.sleep(settings.health_interval_s)

        async def send() -> int:
            async with bodies_session.post(f"{url}/v1/chat/completions", data=body,
                                           headers={"Content-Type": "application/json"}) as response:
                await response.read()
                return response.status

        poller = asyncio.create_task(poll_health())
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        statuses = await asyncio.gather(*(send() for _ in range(settings.bodies)))
        elapsed_s = time.perf_counter() - started
        await asyncio.sleep(0.1)
        done.set()
        await poller
    peak_kib = _memory_kib(pid)["VmHWM"] if peak_reset else sampled_peak_kib
    return {
        "statuses": dict(sorted(Counter(str(s) for s in statuses).items())),
        "baseline_rss_mb": round(baseline_kib / 1024, 1),
        "peak_rss_increase_mb": round((peak_kib - baseline_kib) / 1024, 1),
        "peak_from": "VmHWM" if peak_reset else "VmRSS sampled",
        "health_polls": len(health_ms),
        "health_p50_ms": round(percentile(health_ms, 50), 2),
        "health_max_ms": round(max(health_ms, default=0.0), 2),
        "elapsed_s": round(elapsed_s, 3),
    }


async def run_big_bodies(settings: BigBodiesSettings, progress: Callable[[str], None]) -> dict[str, Any]:
    size = int(settings.body_mib * MiB)
    rounds: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meridian-big-bodies-") as tmp:
        services = await asyncio.to_thread(_start_stack, Path(tmp), settings)
        try:
            router = services[1]
            for shape in settings.shapes:
                body = SHAPES[shape].of_size(size)
                progress(f"  {settings.bodies} bodies of {len(body) / MiB:.2f} MiB, shape {shape} ...")
                rounds[shape] = {"body_bytes": len(body), **await _round(router.url, router.pid, body, settings)}
        finally:
            for service in reversed(services):
                service.stop()
    return {"bodies": settings.bodies, "body_mib": settings.body_mib, "rounds": rounds}


def target_verdicts(figures: dict[str, Any]) -> list[tuple[str, bool]]:
    """The issue's targets, for the shape it names: peak RSS up by less than 300 MB, /health within 1 s."""
    issue = figures["rounds"].get("empty-objects")
    if issue is None:
        return []
    return [("peak RSS increase < 300 MB", issue["peak_rss_increase_mb"] < 300),
            ("/health answered within 1 s throughout", issue["health_max_ms"] < 1000)]


def format_table(figures: dict[str, Any]) -> str:
    lines = [f"{figures['bodies']} concurrent bodies of {figures['body_mib']} MiB, one round per shape",
             f"{'shape':<15}{'statuses':<16}{'peak RSS +MB':>13}{'/health p50 ms':>16}{'/health max ms':>16}"
             f"{'elapsed s':>11}"]
    for shape, r in figures["rounds"].items():
        statuses = ", ".join(f"{n}x{status}" for status, n in r["statuses"].items())
        lines.append(f"{shape:<15}{statuses:<16}{r['peak_rss_increase_mb']:>13}{r['health_p50_ms']:>16}"
                     f"{r['health_max_ms']:>16}{r['elapsed_s']:>11}")
    for name, ok in target_verdicts(figures):
        lines.append(f"target {name} (empty-objects): {'met' if ok else 'MISSED'}")
    return "\n".join(lines)


def main_big_bodies(settings: BigBodiesSettings, progress: Callable[[str], None]) -> dict[str, Any]:
    return asyncio.run(run_big_bodies(settings, progress))
