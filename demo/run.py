"""`meridian demo` (what `make demo` runs): a three-region stack brought up with `meridian up`'s launcher,
simulated clients in every region on their nearest router, then long prompts added to their traffic, a policy
push, a saturated backend and its recovery, narrated live and written up in `.meridian/reports/demo-<time>/`.
The stack is always torn down.

This module is the shell: it starts things, waits and acts. What the figures are, which backend to saturate
and whether the expectations held are decided in `demo_phases`; the printing is `demo_narration`, the report
`demo_report`; the load and the probes are the chaos runner's (`harness.load`, `harness.probes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from control_plane.admin.client import AdminCallError, AdminTarget, call
from demo.narration import length_lines, live_table, phase_summary, router_lines, stamp, verdict_lines
from demo.phases import (
    BASELINE,
    LONG_CONTEXT,
    LONG_PROMPT_TOKENS,
    POLICY,
    RECOVERY,
    SATURATION,
    DemoSettings,
    LengthSplit,
    Phase,
    RegionFigures,
    Verdict,
    breaker_opened,
    deployments_of,
    length_split,
    long_prompts_moved,
    phase_figures,
    pick_backend_to_saturate,
    region_figures,
    requests_in,
    returned_after_recovery,
    saturated_share_dropped,
    spilled_over,
    traffic_moved,
)
from demo.report import DemoRun, report_name, write_report
from harness.load import LoadRecorder, plan_for_stack
from harness.probes import Prober
from harness.stack_handle import StackHandle
from meridian_common.logging_setup import event
from meridian_common.workload import REALISTIC, WorkloadConfig, chat_body, draw
from regions import stack_file
from regions.launcher import UpOptions, run_up
from regions.teardown import run_down

log = logging.getLogger(__name__)

Say = Callable[[str], None]
PROBE_INTERVAL_S = 0.5
STOP_WAIT_S = 15.0
ACK_POLL_S = 0.25
HOG_TIMEOUT_S = 30.0
MAX_HOG_REQUESTS = 100_000
MAX_NARRATIONS = 10_000


class DemoError(RuntimeError):
    """A step of the demo could not be done; the message says which and why."""


class _Clock:
    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._t0


@dataclass(slots=True)
class _Progress:
    """What the narrator needs to know about where the demo is."""

    phase: Phase
    phases: list[Phase] = field(default_factory=list)


def policy_document(models: list[str], regions: list[str], policy: str, budget_ms: float) -> str:
    entries = [f"- {{region: {region}, model: {model}, policy: {policy}"
               + (f", latency_budget_ms: {budget_ms:g}" if budget_ms > 0 else "") + "}"
               for region in regions for model in models]
    return "comment: meridian demo\nmodels:\n" + "\n".join(entries) + "\n"


def routers_acked(status: Mapping[str, Any], router_ids: Mapping[str, Any], policy_version: int) -> dict[str, int]:
    """Routers whose applied version is their region's table in force, written after the policy."""
    tables = {t["region"]: int(t["version"]) for t in status.get("tables", [])}
    acked = {}
    for router in status.get("routers", []):
        rid, region, version = router.get("router_id"), router.get("region"), int(router.get("version") or 0)
        if rid in router_ids and version > policy_version and version == tables.get(region):
            acked[rid] = version
    return acked


async def push_policy(stack: Mapping[str, Any], settings: DemoSettings, clock: _Clock, say: Say,
                      handle: StackHandle) -> tuple[int, dict[str, int]]:
    """Pushes the demo's policy through the admin API and waits (bounded) until every router ACKed a table
    written after it; returns the policy version and each router's acknowledged table version."""
    target = AdminTarget(tuple(stack_file.admin_urls(dict(stack))), stack_file.admin_token(dict(stack)), "stack.json")
    models = sorted({str(b["model"]) for b in stack["backends"].values()})
    regions = list(stack["routers"])
    document = policy_document(models, regions, settings.policy, settings.latency_budget_ms)
    try:
        result = await asyncio.to_thread(call, target, "POST", "/v1/policy", {"yaml": document, "author": "demo"})
    except AdminCallError as error:
        raise DemoError(f"the policy push was refused: {error}") from error
    version = int(result["version"])
    handle.note("policy_pushed", version=version, policy=settings.policy, budget_ms=settings.latency_budget_ms)
    say(f"{stamp(clock())} pushed policy version {version} through the admin API: {settings.policy}, latency "
        f"budget {settings.latency_budget_ms:g} ms, in {', '.join(regions)}")
    router_ids = stack["router_ids"]
    deadline = time.monotonic() + settings.ack_timeout_s
    acked: dict[str, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(AdminCallError):
            acked = routers_acked(await asyncio.to_thread(call, target, "GET", "/v1/status"), router_ids, version)
        if len(acked) == len(router_ids):
            break
        await asyncio.sleep(ACK_POLL_S)
    missing = sorted(set(router_ids) - set(acked))
    if missing:
        raise DemoError(f"routers {', '.join(missing)} did not ACK a table newer than policy version {version} "
                        f"within {settings.ack_timeout_s:g} s")
    handle.note("policy_acked", routers=",".join(f"{r}=v{v}" for r, v in sorted(acked.items())))
    say(f"{stamp(clock())} every router ACKed it: " + ", ".join(f"{r} table v{v}" for r, v in sorted(acked.items())))
    return version, acked


async def _hog(url: str, model: str, workload: WorkloadConfig, seed: int) -> None:
    """Another tenant's load, straight to the backend: the routers neither see nor count it. Whole answers
    drawn from `workload`, until cancelled; cancelling closes the connection, and the simulator frees the slot."""
    rng = random.Random(f"hog:{seed}")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HOG_TIMEOUT_S)) as session:
        for _ in range(MAX_HOG_REQUESTS):
            body = chat_body(model, replace(draw(workload, rng), stream=False), rng)
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                await asyncio.sleep(0.1)


def _open_breakers(prober: Prober) -> list[tuple[str, str, str]]:
    latest: dict[str, Any] = {}
    for probe in prober.router_probes:
        latest[probe.router_id] = probe
    return [(rid, name, state) for rid, probe in latest.items() for name, state in probe.breakers
            if state != "closed"]


async def _narrate(progress: _Progress, recorder: LoadRecorder, prober: Prober, clock: _Clock,
                   settings: DemoSettings, regions: list[str], deployments: Mapping[str, Any], say: Say,
                   stop: asyncio.Event) -> None:
    window = settings.table_every_s
    for _ in range(MAX_NARRATIONS):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=window)
        if stop.is_set():
            return
        now = clock()
        recent = [r for r in recorder.records if now - window <= r.end_s < now]
        figures = {region: region_figures([r for r in recent if r.client_region == region], window, deployments)
                   for region in regions}
        shown = progress.phase
        if now - shown.start_s < window / 2 and progress.phases:
            shown = progress.phases[-1]  # the window is mostly the phase that just ended
        for line in live_table(now, shown, window, figures, deployments, _open_breakers(prober),
                               length_split(recent, deployments)):
            say(line)


async def _phase(name: str, label: str, seconds: float, progress: _Progress, clock: _Clock, say: Say) -> Phase:
    start = clock()
    progress.phase = Phase(name, label, start, start + seconds)
    say(f"\n{stamp(start)} == {name}: {label} ({seconds:g} s)")
    log.info(event("demo_phase", phase=name, seconds=seconds))
    await asyncio.sleep(seconds)
    return progress.phase


def _finish(phase: Phase, clock: _Clock, progress: _Progress) -> Phase:
    done = Phase(phase.name, phase.label, phase.start_s, clock())
    progress.phases.append(done)
    return done


def _summarise(phase: Phase, recorder: LoadRecorder, settings: DemoSettings, regions: list[str],
               deployments: Mapping[str, Any], say: Say) -> dict[str, RegionFigures]:
    figures = phase_figures(list(recorder.records), phase, regions, deployments, settings.settle_fraction)
    for line in phase_summary(phase, figures):
        say(line)
    return figures


def _lengths(phase: Phase, recorder: LoadRecorder, settings: DemoSettings, regions: list[str],
             deployments: Mapping[str, Any]) -> dict[str, LengthSplit]:
    """Long prompts and shorter ones, by architecture, over the settled part of the phase: every client region
    together ("all"), then each."""
    settled = requests_in(recorder.records, phase.settled_start(settings.settle_fraction), phase.end_s)
    splits = {"all": length_split(settled, deployments)}
    splits.update({region: length_split([r for r in settled if r.client_region == region], deployments)
                   for region in regions})
    return splits


async def run_phases(stack: Mapping[str, Any], settings: DemoSettings, say: Say) -> DemoRun:
    """Load and probes throughout; baseline, long prompts, policy push, saturation, recovery; the saturation is
    always undone. Returns what was recorded and the verdict (with `error` set when a step failed)."""
    started_at = datetime.now(UTC)
    clock = _Clock()
    handle = StackHandle(stack, clock=clock)
    deployments = deployments_of(stack)
    regions = list(stack["routers"])
    plan = plan_for_stack(stack, settings.workload, workers_per_client=settings.workers_per_client,
                          think_ms=settings.think_ms)
    clients = plan.clients
    recorder = LoadRecorder(plan, stack, clock)
    prober = Prober({rid: (str(e["region"]), str(e["url"])) for rid, e in stack["router_ids"].items()}, {}, clock,
                    PROBE_INTERVAL_S)
    progress = _Progress(Phase(BASELINE, "starting", 0.0, 0.0))
    stop = asyncio.Event()
    say(f"\nclients: {', '.join(f'{n} in {r}' for n, r in sorted(clients.items()))} "
        f"({settings.workers_per_client} workers each), each on its nearest router; model {plan.model}")
    for line in sorted({plan.workload_of(client).describe() for client in clients}):
        say(f"workload: {line}")
    tasks = [asyncio.create_task(recorder.run(stop)), asyncio.create_task(prober.run(stop)),
             asyncio.create_task(_narrate(progress, recorder, prober, clock, settings, regions, deployments, say,
                                          stop))]
    hogs: list[asyncio.Task[None]] = []
    long_stop = asyncio.Event()
    figures: dict[str, dict[str, RegionFigures]] = {}
    lengths: dict[str, dict[str, LengthSplit]] = {}
    saturated: str | None = None
    error: str | None = None
    try:
        phase = await _phase(BASELINE, "the topology's default policy (latency-first)", settings.baseline_s,
                             progress, clock, say)
        phase = _finish(phase, clock, progress)
        figures[BASELINE] = _summarise(phase, recorder, settings, regions, deployments, say)
        lengths[BASELINE] = _lengths(phase, recorder, settings, regions, deployments)

        start = clock()
        long_workload = settings.long_prompts()
        label = (f"{settings.long_context_workers} more workers per client send prompts of about "
                 f"{long_workload.prompt_tokens_median // 1000}k tokens (up to "
                 f"{long_workload.prompt_tokens_max // 1000}k), latency-first")
        progress.phase = Phase(LONG_CONTEXT, label, start, start + settings.long_context_s)
        say(f"\n{stamp(start)} == {LONG_CONTEXT}: {label} ({settings.long_context_s:g} s)")
        say(f"  long-context workload: {long_workload.describe()}")
        handle.note("long_context_started", workers_per_client=settings.long_context_workers,
                    prompt_tokens_median=long_workload.prompt_tokens_median)
        tasks.append(asyncio.create_task(recorder.run_extra(long_workload, settings.long_context_workers, long_stop,
                                                            label="long")))
        await asyncio.sleep(max(0.0, settings.long_context_s - (clock() - start)))
        long_stop.set()  # their requests in flight end in the next phase, counted in this one (by start time)
        handle.note("long_context_ended")
        phase = _finish(progress.phase, clock, progress)
        figures[LONG_CONTEXT] = _summarise(phase, recorder, settings, regions, deployments, say)
        lengths[LONG_CONTEXT] = _lengths(phase, recorder, settings, regions, deployments)
        for line in length_lines(lengths[LONG_CONTEXT], LONG_PROMPT_TOKENS):
            say(line)

        start = clock()
        label = f"{settings.policy}, latency budget {settings.latency_budget_ms:g} ms, pushed to every region"
        progress.phase = Phase(POLICY, label, start, start + settings.policy_s)
        say(f"\n{stamp(start)} == {POLICY}: {label} ({settings.policy_s:g} s)")
        await push_policy(stack, settings, clock, say, handle)
        await asyncio.sleep(max(0.0, settings.policy_s - (clock() - start)))
        policy_phase = _finish(progress.phase, clock, progress)
        figures[POLICY] = _summarise(policy_phase, recorder, settings, regions, deployments, say)

        simulated = [name for name, b in stack["backends"].items() if b.get("simulated", True)]
        saturated = settings.saturate or pick_backend_to_saturate(
            requests_in(recorder.records, policy_phase.settled_start(settings.settle_fraction), policy_phase.end_s),
            deployments, simulated)
        start = clock()
        label = f"{saturated} saturated: another tenant keeps {settings.hog_streams} requests in flight on it" + (
            f", capacity cut to {settings.saturated_capacity}" if settings.saturated_capacity is not None else "")
        progress.phase = Phase(SATURATION, label, start, start + settings.saturation_s)
        say(f"\n{stamp(start)} == {SATURATION}: {label} ({settings.saturation_s:g} s)")
        if settings.saturated_capacity is not None:
            await asyncio.to_thread(handle.change_simulator, saturated, capacity=settings.saturated_capacity)
        handle.note("saturated", backend=saturated, hog_streams=settings.hog_streams)
        hog_workload = settings.workload.apply(REALISTIC)
        hogs = [asyncio.create_task(_hog(handle.simulator_url(saturated), str(stack["backends"][saturated]["model"]),
                                         hog_workload, index)) for index in range(settings.hog_streams)]
        await asyncio.sleep(max(0.0, settings.saturation_s - (clock() - start)))
        figures[SATURATION] = _summarise(_finish(progress.phase, clock, progress), recorder, settings, regions,
                                         deployments, say)

        start = clock()
        label = f"{saturated} restored"
        progress.phase = Phase(RECOVERY, label, start, start + settings.recovery_s)
        say(f"\n{stamp(start)} == {RECOVERY}: {label} ({settings.recovery_s:g} s)")
        for hog in hogs:
            hog.cancel()
        handle.note("saturation_lifted", backend=saturated)
        failures = await asyncio.to_thread(handle.restore)
        if failures:
            raise DemoError(f"could not restore {saturated}: {'; '.join(failures)}")
        await asyncio.sleep(max(0.0, settings.recovery_s - (clock() - start)))
        figures[RECOVERY] = _summarise(_finish(progress.phase, clock, progress), recorder, settings, regions,
                                       deployments, say)
    except DemoError as failure:
        error = str(failure)
        say(f"{stamp(clock())} demo step failed: {error}")
        log.warning(event("demo_step_failed", error=error))
    finally:
        for hog in hogs:
            hog.cancel()
        long_stop.set()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(handle.restore))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, *hogs, return_exceptions=True), timeout=STOP_WAIT_S)
    records = tuple(recorder.records)
    states = tuple((p.t_s, p.router_id, name, state) for p in prober.router_probes for name, state in p.breakers
                   if state != "closed")
    expectations = (_expectations(progress.phases, figures, records, states, saturated, settings, deployments)
                    if not error else ())
    return DemoRun(settings, started_at, tuple(progress.phases), tuple(regions), deployments, records, figures,
                   Verdict(expectations, error), tuple((e.t_s, e.name, dict(e.detail)) for e in handle.events()),
                   states, saturated, {region: list(urls) for region, urls in stack["routers"].items()},
                   tuple(stack.get("processes", [])), lengths)


def _expectations(phases: list[Phase], figures: Mapping[str, Mapping[str, RegionFigures]],
                  records: tuple[Any, ...], states: tuple[tuple[float, str, str, str], ...], saturated: str | None,
                  settings: DemoSettings, deployments: Mapping[str, Any]) -> tuple[Any, ...]:
    by_name = {p.name: p for p in phases}
    baseline, long_context = by_name[BASELINE], by_name[LONG_CONTEXT]
    policy, saturation, recovery = by_name[POLICY], by_name[SATURATION], by_name[RECOVERY]
    assert saturated is not None
    fraction = settings.settle_fraction
    return (
        long_prompts_moved(requests_in(records, baseline.settled_start(fraction), baseline.end_s),
                           requests_in(records, long_context.settled_start(fraction), long_context.end_s),
                           deployments),
        traffic_moved(figures[BASELINE], figures[POLICY]),
        saturated_share_dropped(saturated, requests_in(records, policy.settled_start(fraction), policy.end_s),
                                requests_in(records, saturation.settled_start(fraction), saturation.end_s)),
        breaker_opened(saturated, states, saturation),
        spilled_over(figures[POLICY], figures[SATURATION]),
        returned_after_recovery(saturated, requests_in(records, policy.settled_start(fraction), policy.end_s),
                                requests_in(records, recovery.start_s, recovery.end_s), recovery.start_s),
    )


def _indented(say: Say) -> Say:
    return lambda line: say("  " + line if line else line)


def run_demo(settings: DemoSettings, say: Say = print) -> int:
    """0 when the demo ran and its expectations held, 1 when one did not, 2 for bad settings, 130 on Ctrl-C;
    the stack is torn down in every case."""
    problems = settings.problems()
    if problems:
        say("meridian demo: " + "; ".join(problems))
        return 2
    say(f"== starting a stack from {settings.topology_path} (meridian up)")
    err = io.StringIO()
    code = run_up(UpOptions(topology_path=settings.topology_path, routers_per_region=1, directory=settings.directory),
                  detach=True, say=_indented(say), err=err)
    if code != 0:
        say(f"meridian demo: the stack did not start: {err.getvalue().strip()}")
        return code
    run: DemoRun | None = None
    try:
        stack = stack_file.find_stack(settings.directory)
        say("routers (clients pick the nearest):")
        for line in router_lines(stack["routers"]):
            say(line)
        run = asyncio.run(run_phases(stack, settings, say))
    except KeyboardInterrupt:
        say("\nmeridian demo: interrupted")
        return 130
    finally:
        say("\n== tearing the stack down (meridian down)")
        run_down(settings.directory, say=_indented(say), err=err)
    reports = settings.reports_dir or stack_file.state_dir(settings.directory) / "reports"
    directory = write_report(run, reports / report_name(run.started_at))
    for line in verdict_lines(run.verdict, str(directory)):
        say(line)
    return 0 if run.verdict.passed else 1
