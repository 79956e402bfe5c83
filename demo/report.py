"""The demo's report directory `.meridian/reports/demo-<time>/`: `report.md`, `report.json` (every figure) and
two plots, `traffic_share.png` (per client region, who served it over time) and `latency.png` (per client
region, p50 and p95 over time), each with the phases shaded and labelled. Built on the chaos report's
timeline figures (`harness.timeline.bins`) and window shading (`harness.plots.shade_windows`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from demo.phases import LONG_PROMPT_TOKENS, DemoSettings, Deployment, LengthSplit, Phase, RegionFigures, Verdict
from harness.plots import plt, shade_windows
from harness.timeline import Bin, Phases, RequestRecord, Timeline, bins

BIN_S = 1.0
SMOOTH_BINS = 3
"""Traffic shares are averaged over this many bins so that a plot shows a trend, not sampling noise."""


@dataclass(frozen=True, slots=True)
class DemoRun:
    """Everything the demo recorded and concluded, for the report."""

    settings: DemoSettings
    started_at: datetime
    phases: tuple[Phase, ...]
    regions: tuple[str, ...]
    deployments: Mapping[str, Deployment]
    records: tuple[RequestRecord, ...]
    figures: Mapping[str, Mapping[str, RegionFigures]]
    """phase -> client region -> figures (the settled part of the phase)."""
    verdict: Verdict
    events: tuple[tuple[float, str, Mapping[str, Any]], ...]
    breaker_states: tuple[tuple[float, str, str, str], ...]
    """(t_s, router id, deployment, state) of every probe that saw a breaker not closed."""
    saturated: str | None
    routers: Mapping[str, Sequence[str]]
    processes: tuple[Mapping[str, Any], ...] = ()
    """stack.json's processes (name, pid, start time): what ran, and what the teardown had to stop."""
    lengths: Mapping[str, Mapping[str, LengthSplit]] = field(default_factory=dict)
    """phase -> "all" or a client region -> long prompts and shorter ones by architecture (settled part)."""


def report_name(when: datetime) -> str:
    return f"demo-{when.strftime('%Y%m%dT%H%M%S')}"


def region_bins(run: DemoRun, region: str, width_s: float = BIN_S) -> list[Bin]:
    end_s = run.phases[-1].end_s if run.phases else max((r.end_s for r in run.records), default=0.0)
    timeline = Timeline(f"demo {region}", Phases(end_s, end_s, end_s),
                        tuple(r for r in run.records if r.client_region == region))
    return bins(timeline, width_s)


def _series(run: DemoRun) -> dict[str, list[dict[str, Any]]]:
    return {region: [{"t_s": b.start_s, "requests": b.requests, "errors": b.errors, "p50_ms": round(b.p50_ms, 1),
                      "p95_ms": round(b.p95_ms, 1), "served_by": dict(b.served_by)} for b in region_bins(run, region)]
            for region in run.regions}


def report_json(run: DemoRun) -> dict[str, Any]:
    s = run.settings
    return {
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "passed": run.verdict.passed,
        "error": run.verdict.error,
        "topology": str(s.topology_path),
        "settings": {"phase_s": dict(s.phase_seconds), "policy": s.policy, "latency_budget_ms": s.latency_budget_ms,
                     "saturated_capacity": s.saturated_capacity, "hog_streams": s.hog_streams,
                     "workers_per_client": s.workers_per_client, "settle_fraction": s.settle_fraction},
        "routers": {region: list(urls) for region, urls in run.routers.items()},
        "deployments": {name: {"architecture": d.architecture, "region": d.region}
                        for name, d in run.deployments.items()},
        "saturated_backend": run.saturated,
        "phases": [{"name": p.name, "label": p.label, "start_s": round(p.start_s, 3), "end_s": round(p.end_s, 3)}
                   for p in run.phases],
        "expectations": [e.as_json() for e in run.verdict.expectations],
        "figures": {phase: {region: f.as_json() for region, f in by_region.items()}
                    for phase, by_region in run.figures.items()},
        "lengths": {phase: {region: split.as_json() for region, split in by_region.items()}
                    for phase, by_region in run.lengths.items()},
        "events": [{"t_s": round(t, 3), "name": name, **_jsonable(detail)} for t, name, detail in run.events],
        "breaker_states": [{"t_s": round(t, 3), "router": router, "deployment": deployment, "state": state}
                           for t, router, deployment, state in run.breaker_states],
        "processes": [dict(p) for p in run.processes],
        "series": _series(run),
        "bin_s": BIN_S,
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _shares(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items()) or "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report_markdown(run: DemoRun) -> str:
    s = run.settings
    lines = [
        f"# Meridian demo — {'PASSED' if run.verdict.passed else 'FAILED'}",
        "",
        f"{run.started_at.isoformat(timespec='seconds')}, topology `{s.topology_path.name}`, "
        f"{len(run.regions)} regions; simulated clients in every region on their nearest router.",
        "",
        "| phase | from | to | what |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p.name} | {p.start_s:.1f} s | {p.end_s:.1f} s | {_cell(p.label)} |" for p in run.phases]
    lines += ["", "## Expectations", "", "| | expectation | detail |", "|---|---|---|"]
    for e in run.verdict.expectations:
        mark = "PASS" if e.passed else ("FAIL" if e.required else "note")
        lines.append(f"| {mark} | {_cell(e.name)} | {_cell(e.detail)} |")
    if run.verdict.error:
        lines.append(f"| FAIL | ran to the end | {_cell(run.verdict.error)} |")
    lines += ["", "## Who served each region", "",
              f"Figures over the settled part of each phase (its first {s.settle_fraction:.0%} is the reaction).", "",
              "| phase | clients in | requests | errors | p50 ms | p95 ms | by deployment | by architecture "
              "| by region |",
              "|---|---|---|---|---|---|---|---|---|"]
    for phase, by_region in run.figures.items():
        for region, f in by_region.items():
            lines.append(f"| {phase} | {region} | {f.requests} | {f.errors} | {f.p50_ms:.0f} | {f.p95_ms:.0f} | "
                         f"{_shares(f.by_deployment)} | {_shares(f.by_architecture)} | {_shares(f.by_region)} |")
    if run.lengths:
        lines += ["", f"## Long prompts ({LONG_PROMPT_TOKENS // 1000}k+ tokens) and shorter ones", "",
                  "Who served each, by architecture, over the settled part of the phase.", "",
                  "| phase | clients in | long prompts | served by | shorter prompts | served by |",
                  "|---|---|---|---|---|---|"]
        for phase, by_region in run.lengths.items():
            for region, split in by_region.items():
                lines.append(f"| {phase} | {region} | {split.long_requests} | "
                             f"{_shares(split.long_by_architecture)} | {split.short_requests} | "
                             f"{_shares(split.short_by_architecture)} |")
    lines += ["", "## Events", ""]
    lines += [f"- {t:6.2f} s  {name} " + " ".join(f"{k}={v}" for k, v in detail.items())
              for t, name, detail in run.events] or ["- none"]
    lines += ["", "## Plots", "", "![traffic share](traffic_share.png)", "", "![latency](latency.png)", ""]
    return "\n".join(lines)


def _windows(run: DemoRun) -> list[tuple[float, float, str]]:
    return [(p.start_s, p.end_s, p.name) for p in run.phases]


def _colours(deployments: Sequence[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10")
    return {name: palette(index % 10) for index, name in enumerate(deployments)}


def _smoothed(values: Sequence[float], width: int = SMOOTH_BINS) -> list[float]:
    half = width // 2
    return [sum(values[max(0, i - half):i + half + 1]) / len(values[max(0, i - half):i + half + 1])
            for i in range(len(values))]


def plot_traffic_share(run: DemoRun, path: Path) -> None:
    names = sorted(run.deployments, key=lambda n: (run.deployments[n].region, n))
    colours = _colours(names)
    figure, axes = plt.subplots(len(run.regions), 1, figsize=(12, 2.6 * len(run.regions) + 1.2), sharex=True,
                                squeeze=False)
    for axis, region in zip(axes[:, 0], run.regions, strict=True):
        series = region_bins(run, region)
        t = [b.start_s + BIN_S / 2 for b in series]
        totals = [sum(b.served_by.values()) for b in series]
        shares = {name: _smoothed([b.served_by.get(name, 0) / total if total else 0.0
                                   for b, total in zip(series, totals, strict=True)]) for name in names}
        axis.stackplot(t, *[shares[n] for n in names], colors=[colours[n] for n in names], alpha=0.9, zorder=2)
        shade_windows(axis, _windows(run))
        axis.set_ylim(0, 1.12)
        axis.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        axis.set_ylabel("share")
        axis.set_title(f"clients in {region}: share of requests served per deployment", fontsize="medium",
                       loc="left")
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the load started")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
    labels = [f"{n} ({run.deployments[n].architecture}, {run.deployments[n].region})" for n in names]
    figure.legend(handles, labels, loc="lower center", ncol=min(3, len(names)), fontsize="small", frameon=False)
    figure.suptitle("Traffic share per client region" + (f" — {run.saturated} saturated" if run.saturated else ""))
    figure.tight_layout(rect=(0, 0.04 + 0.025 * ((len(names) - 1) // 3), 1, 1))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_latency(run: DemoRun, path: Path) -> None:
    from matplotlib.ticker import ScalarFormatter

    series_of = {region: region_bins(run, region) for region in run.regions}
    highest = max((b.p95_ms for bins_ in series_of.values() for b in bins_), default=100.0)
    figure, axes = plt.subplots(len(run.regions), 1, figsize=(12, 2.4 * len(run.regions) + 1.0), sharex=True,
                                sharey=True, squeeze=False)
    for axis, region in zip(axes[:, 0], run.regions, strict=True):
        series = series_of[region]
        t = [b.start_s + BIN_S / 2 for b in series]
        # A bin without a successful request is a gap in the line, not a fall to zero.
        axis.plot(t, [b.p50_ms if b.p50_ms > 0 else float("nan") for b in series], label="p50", color="tab:blue")
        axis.plot(t, [b.p95_ms if b.p95_ms > 0 else float("nan") for b in series], label="p95", color="tab:red")
        errors = [(b.start_s + BIN_S / 2, b.errors) for b in series if b.errors]
        if errors:
            axis.scatter([e[0] for e in errors], [12.0] * len(errors), marker="x", color="black",
                         label="client errors")
        axis.set_yscale("log")
        axis.set_ylim(10, max(1000.0, highest * 2))
        axis.yaxis.set_major_formatter(ScalarFormatter())
        shade_windows(axis, _windows(run))
        axis.set_ylabel("latency ms")
        axis.set_title(f"clients in {region}: client-side latency per {BIN_S:g} s (log scale)", fontsize="medium",
                       loc="left")
        axis.grid(alpha=0.3)
        axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
    axes[-1, 0].set_xlabel("seconds since the load started")
    figure.suptitle("Latency per client region")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_report(run: DemoRun, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report_json(run), indent=1))
    (directory / "report.md").write_text(report_markdown(run))
    plot_traffic_share(run, directory / "traffic_share.png")
    plot_latency(run, directory / "latency.png")
    return directory
