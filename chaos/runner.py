"""Runs one chaos scenario against a running stack: load and probes throughout, baseline -> fault window ->
recovery, the fault always removed (even on a failed check, an error or Ctrl-C), then the checks over the
recorded timeline and the report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from chaos.report import write_report
from chaos.scenario import CheckResult, RunSettings, Scenario, ScenarioResult
from harness.load import LoadPlan, LoadRecorder, plan_for_stack
from harness.probes import Prober, router_probe_from
from harness.stack_handle import StackHandle
from harness.timeline import Phases, Timeline, error_count
from meridian_common.logging_setup import event
from meridian_common.workload import NO_OVERRIDES, WorkloadOverrides

log = logging.getLogger(__name__)

Say = Callable[[str], None]
STOP_WAIT_S = 15.0
PROGRESS_EVERY_S = 1.0


def load_plan(stack: Mapping[str, Any], workers_per_client: int,
              workload: WorkloadOverrides = NO_OVERRIDES) -> LoadPlan:
    """Clients of the topology (one per region when it names none) with their workloads, on the first model of
    the stack."""
    return plan_for_stack(stack, workload, workers_per_client=workers_per_client)


async def wait_steady(handle: StackHandle, timeout_s: float) -> list[str]:
    """Waits (bounded) until every router is ready with every breaker closed and every deployment healthy,
    and a replica leads; returns what was still wrong at the deadline (empty when steady). An earlier
    scenario's breaker or election must not be blamed on this one."""
    deadline = time.monotonic() + timeout_s
    problems: list[str] = ["not checked"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
        while time.monotonic() < deadline:
            problems = []
            for router_id, url in handle.routers.items():
                probe = router_probe_from(0.0, router_id, "", await _json(session, f"{url}/routing"))
                if not probe.reachable:
                    problems.append(f"{router_id} unreachable")
                    continue
                # Half-open is eligible: it waits for the trial request that will close it.
                problems += [f"{router_id}: {name} breaker {state}" for name, state in probe.breakers
                             if state == "open"]
                problems += [f"{router_id}: {name} unhealthy" for name, ok in probe.healthy if not ok]
                if probe.control_plane_link != "connected":
                    problems.append(f"{router_id}: control-plane link {probe.control_plane_link}")
            roles = [(await _json(session, f"{info['admin']}/health") or {}).get("role")
                     for info in handle.replicas.values()]
            if "leader" not in roles:
                problems.append(f"no leader (replicas: {roles})")
            if not problems:
                return []
            await asyncio.sleep(0.25)
    return problems


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url) as response:
            return await response.json(content_type=None) if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


class _Clock:
    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self.wall_start_unix_ms = int(time.time() * 1000)

    def __call__(self) -> float:
        return time.monotonic() - self._t0


async def run_scenario(scenario: Scenario, stack: Mapping[str, Any], settings: RunSettings,
                       say: Say = print) -> ScenarioResult:
    settings = replace(settings, fault_s=max(settings.fault_s, scenario.min_fault_s),
                       recovery_s=max(settings.recovery_s, scenario.min_recovery_s))
    problems = await wait_steady(StackHandle(stack), settings.steady_timeout_s)
    if problems:
        say(f"[ chaos ] {scenario.name}: the stack is not steady after {settings.steady_timeout_s:.0f} s "
            f"({'; '.join(problems[:4])}); running anyway")
    clock = _Clock()
    handle = StackHandle(stack, clock=clock)
    plan = load_plan(stack, settings.workers_per_client, settings.workload)
    recorder = LoadRecorder(plan, stack, clock)
    prober = Prober({rid: (handle.router_regions[rid], url) for rid, url in handle.routers.items()},
                    {rid: str(info["admin"]) for rid, info in handle.replicas.items()}, clock,
                    settings.probe_interval_s)
    stop = asyncio.Event()
    say(f"[{clock():5.1f}s] {scenario.name}: baseline {settings.baseline_s:g} s, fault {settings.fault_s:g} s, "
        f"recovery {settings.recovery_s:g} s; clients {', '.join(sorted(recorder_clients(stack)))}")
    for line in sorted({plan.workload_of(client).describe() for client in plan.clients}):
        say(f"[{clock():5.1f}s] {scenario.name}: workload: {line}")
    tasks = [asyncio.create_task(recorder.run(stop)), asyncio.create_task(prober.run(stop)),
             asyncio.create_task(_progress(recorder, clock, stop, say, scenario.name))]
    facts: Mapping[str, Any] = {}
    error: str | None = None
    restore_failures: Sequence[str] = ()
    fault_start = fault_end = 0.0
    try:
        await asyncio.sleep(settings.baseline_s)
        baseline = _timeline(scenario.name, recorder, prober, handle, clock, {}, clock(), clock(), clock())
        fault_start = clock()
        try:
            facts = await asyncio.to_thread(scenario.inject, handle, baseline)
            say(f"[{clock():5.1f}s] {scenario.name}: fault injected: {scenario.injects} "
                f"({_brief(facts)})")
            await asyncio.sleep(max(0.0, settings.fault_s - (clock() - fault_start)))
        except Exception as failure:  # the fault could not be made: say why, still put everything back
            error = f"{type(failure).__name__}: {failure}"
            log.warning(event("chaos_inject_failed", scenario=scenario.name, error=error))
            say(f"[{clock():5.1f}s] {scenario.name}: could not inject the fault: {error}")
        finally:
            fault_end = clock()
            restore_failures = await asyncio.shield(asyncio.to_thread(_remove, scenario, handle))
            say(f"[{clock():5.1f}s] {scenario.name}: fault removed"
                + (f" (restore failed: {'; '.join(restore_failures)})" if restore_failures else "")
                + "; recovering")
        await asyncio.sleep(settings.recovery_s)
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=STOP_WAIT_S)
    timeline = _timeline(scenario.name, recorder, prober, handle, clock, facts, fault_start, fault_end, clock())
    results = tuple(_run_check(check, timeline) for check in scenario.checks)
    return ScenarioResult(scenario, results, timeline, error, tuple(restore_failures), steady=not problems,
                          settings=settings)


def recorder_clients(stack: Mapping[str, Any]) -> list[str]:
    return [f"{name} ({region})" for name, region in load_plan(stack, 1).clients.items()]


def _remove(scenario: Scenario, handle: StackHandle) -> list[str]:
    failures = list(scenario.remove(handle))
    return failures + handle.restore()  # whatever the scenario's own removal left


def _run_check(check: Callable[[Timeline], CheckResult], timeline: Timeline) -> CheckResult:
    try:
        return check(timeline)
    except Exception as failure:  # a crashing check is a failed check, with the reason, not a crashed run
        name = getattr(check, "__qualname__", "check").split(".<locals>")[0]
        return CheckResult(name, False, f"check raised {type(failure).__name__}: {failure}")


def _timeline(name: str, recorder: LoadRecorder, prober: Prober, handle: StackHandle, clock: _Clock,
              facts: Mapping[str, Any], fault_start: float, fault_end: float, end: float) -> Timeline:
    return Timeline(name, Phases(fault_start, fault_end, end), tuple(recorder.records),
                    tuple(prober.router_probes), tuple(prober.replica_probes), handle.events(), dict(facts),
                    clock.wall_start_unix_ms)


def _brief(facts: Mapping[str, Any]) -> str:
    keys = ("backend", "region", "killed_replica", "killed_member", "killed_primary", "pid", "proxies", "budget_ms",
            "capacity")
    shown = []
    for key in keys:
        if key in facts:
            value = facts[key]
            shown.append(f"{key}={','.join(value) if isinstance(value, list) else value}")
    return " ".join(shown)


async def _progress(recorder: LoadRecorder, clock: _Clock, stop: asyncio.Event, say: Say, name: str) -> None:
    seen = 0
    for _ in range(100_000):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=PROGRESS_EVERY_S)
        if stop.is_set():
            return
        records = list(recorder.records)
        fresh = records[seen:]
        seen = len(records)
        say(f"[{clock():5.1f}s] {name}: {len(records)} requests, {error_count(records)} errors "
            f"(+{len(fresh)} in the last second, {error_count(fresh)} failed)")


def default_reports_dir(stack: Mapping[str, Any]) -> Path:
    return Path(stack["directory"]) / "reports"


def report_name(scenario: str, when: datetime | None = None) -> str:
    return f"chaos-{scenario}-{(when or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}"


async def run_and_report(scenario: Scenario, stack: Mapping[str, Any], settings: RunSettings,
                         say: Say = print) -> ScenarioResult:

    result = await run_scenario(scenario, stack, settings, say)
    if settings.write_report:
        directory = (settings.reports_dir or default_reports_dir(stack)) / report_name(scenario.name)
        result = replace(result, report_dir=write_report(result, directory))
    return result
