"""A chaos run's report directory: `report.md` (verdicts, phases, events), `report.json` (every figure and
every record) and `timeline.png` (request rate, errors, latency and traffic share over time, the fault
window shaded). matplotlib runs headless (Agg)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chaos.scenario import ScenarioResult
from harness.plots import plt
from harness.timeline import Timeline, bins, phases_figures

BIN_S = 0.5


def report_json(result: ScenarioResult) -> dict[str, Any]:
    timeline = result.timeline
    p = timeline.phases
    return {
        "scenario": result.scenario.name,
        "description": result.scenario.description,
        "injects": result.scenario.injects,
        "passed": result.passed,
        "error": result.error,
        "restore_failures": list(result.restore_failures),
        "stack_steady_at_start": result.steady,
        "settings": {"baseline_s": result.settings.baseline_s, "fault_s": result.settings.fault_s,
                     "recovery_s": result.settings.recovery_s, "probe_interval_s": result.settings.probe_interval_s,
                     "workers_per_client": result.settings.workers_per_client},
        "phases": {"fault_start_s": round(p.fault_start_s, 3), "fault_end_s": round(p.fault_end_s, 3),
                   "end_s": round(p.end_s, 3), "wall_start_unix_ms": timeline.wall_start_unix_ms},
        "checks": [c.as_json() for c in result.checks],
        "figures": {phase: f.as_json() for phase, f in phases_figures(timeline).items()},
        "facts": _jsonable(dict(timeline.facts)),
        "events": [{"t_s": round(e.t_s, 3), "name": e.name, **_jsonable(dict(e.detail))} for e in timeline.events],
        "series": [{"t_s": b.start_s, "requests": b.requests, "errors": b.errors, "p50_ms": round(b.p50_ms, 1),
                    "p95_ms": round(b.p95_ms, 1), "served_by": dict(b.served_by)} for b in bins(timeline, BIN_S)],
        "requests": [asdict(r) for r in timeline.requests],
        "router_probes": [asdict(r) for r in timeline.router_probes],
        "replica_probes": [asdict(r) for r in timeline.replica_probes],
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def report_markdown(result: ScenarioResult) -> str:
    timeline = result.timeline
    p = timeline.phases
    lines = [
        f"# Chaos: {result.scenario.name} — {'PASSED' if result.passed else 'FAILED'}",
        "",
        result.scenario.description,
        "",
        f"- fault: {result.scenario.injects}",
        f"- phases: baseline 0–{p.fault_start_s:.1f} s, fault {p.fault_start_s:.1f}–{p.fault_end_s:.1f} s, "
        f"recovery {p.fault_end_s:.1f}–{p.end_s:.1f} s",
    ]
    if timeline.facts:
        lines.append("- facts: " + ", ".join(f"{k}={_short(v)}" for k, v in timeline.facts.items()
                                             if k not in ("deployment_regions", "rtt_ms")))
    if not result.steady:
        lines.append("- note: the stack was not steady when the run started (see the events)")
    lines += ["", "## Checks", "", "| | check | detail |", "|---|---|---|"]
    for check in result.checks:
        lines.append(f"| {'PASS' if check.passed else 'FAIL'} | {check.name} | {_cell(check.detail)} |")
    if result.error:
        lines.append(f"| FAIL | fault injected | {_cell(result.error)} |")
    if result.restore_failures:
        lines.append(f"| FAIL | stack restored | {_cell('; '.join(result.restore_failures))} |")
    lines += ["", "## Phases", "", "| phase | requests | errors | rate /s | p50 ms | p95 ms | p99 ms | share |",
              "|---|---|---|---|---|---|---|---|"]
    for phase, f in phases_figures(timeline).items():
        share = ", ".join(f"{name} {value:.0%}" for name, value in f.share.items()) or "-"
        lines.append(f"| {phase} | {f.requests} | {f.errors} | {f.rate_per_s:.1f} | {f.p50_ms:.0f} | {f.p95_ms:.0f} "
                     f"| {f.p99_ms:.0f} | {share} |")
    lines += ["", "## Events", ""]
    lines += [f"- {e.t_s:6.2f} s  {e.name} " + " ".join(f"{k}={_short(v)}" for k, v in e.detail.items())
              for e in timeline.events] or ["- none"]
    lines += ["", "![timeline](timeline.png)", ""]
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plot(timeline: Timeline, path: Path) -> None:
    series = bins(timeline, BIN_S)
    t = [b.start_s + BIN_S / 2 for b in series]
    figure, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    rate, errors, latency, share = axes
    rate.plot(t, [b.requests / BIN_S for b in series], color="tab:blue")
    rate.set_ylabel("requests/s")
    errors.bar(t, [b.errors for b in series], width=BIN_S * 0.9, color="tab:red")
    errors.set_ylabel(f"errors per {BIN_S:g} s")
    errors.set_ylim(0, max(1, *(b.errors for b in series)) * 1.1)
    latency.plot(t, [b.p50_ms for b in series], label="p50")
    latency.plot(t, [b.p95_ms for b in series], label="p95")
    latency.set_ylabel("latency ms")
    latency.legend(loc="upper left")
    backends = sorted({name for b in series for name in b.served_by})
    if backends:
        totals = [max(1, sum(b.served_by.values())) for b in series]
        share.stackplot(t, *[[b.served_by.get(name, 0) / total for b, total in zip(series, totals, strict=True)]
                             for name in backends], labels=backends)
        share.legend(loc="upper left", fontsize="small")
    share.set_ylabel("traffic share")
    share.set_ylim(0, 1)
    share.set_xlabel("seconds since the start of the run")
    p = timeline.phases
    for axis in axes:
        axis.axvspan(p.fault_start_s, p.fault_end_s, color="tab:orange", alpha=0.2)
        axis.grid(alpha=0.3)
    rate.set_title(f"chaos {timeline.scenario}: fault window shaded")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def write_report(result: ScenarioResult, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report_json(result), indent=1))
    (directory / "report.md").write_text(report_markdown(result))
    plot(result.timeline, directory / "timeline.png")
    return directory
