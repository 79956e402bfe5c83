"""What the demo prints while it runs: a short table per client region every few seconds, a summary at the end
of each phase and the verdict. Pure string building over the demo's figures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from demo.phases import LONG_PROMPT_TOKENS, Deployment, Expectation, LengthSplit, Phase, RegionFigures, Verdict

SERVED_BY_SHOWN = 3


def stamp(t_s: float) -> str:
    return f"[{t_s:5.1f}s]"


def deployment_label(name: str, deployments: Mapping[str, Deployment], home: str) -> str:
    deployment = deployments.get(name)
    if deployment is None:
        return name
    where = "" if deployment.region == home else f", {deployment.region}"
    return f"{name} ({deployment.architecture}{where})"


def served_by(figures: RegionFigures, deployments: Mapping[str, Deployment], home: str,
              limit: int = SERVED_BY_SHOWN) -> str:
    shown = [f"{deployment_label(name, deployments, home)} {share:.0%}"
             for name, share in list(figures.by_deployment.items())[:limit]]
    rest = len(figures.by_deployment) - limit
    return ", ".join(shown) + (f" +{rest} more" if rest > 0 else "") if shown else "-"


def live_table(t_s: float, phase: Phase, window_s: float, figures: Mapping[str, RegionFigures],
               deployments: Mapping[str, Deployment], breakers: Iterable[tuple[str, str, str]],
               lengths: LengthSplit | None = None) -> list[str]:
    """`breakers`: (router id, deployment, state) of every breaker that is not closed right now; `lengths`: the
    window's long and shorter prompts by architecture, shown when the window had long ones."""
    lines = [f"{stamp(t_s)} {phase.label} — last {window_s:.0f} s",
             f"  {'clients in':<10} {'router':<9} {'req/s':>6} {'err':>4} {'p50':>7} {'p95':>7}  served by"]
    for region, f in figures.items():
        router = ",".join(f.routers) or "-"
        router = router if len(router) <= 9 else router[:8] + "+"
        lines.append(f"  {region:<10} {router:<9} {f.rate_per_s:6.1f} {f.errors:4d} {f.p50_ms:5.0f}ms "
                     f"{f.p95_ms:5.0f}ms  {served_by(f, deployments, region)}")
    if lengths is not None and lengths.long_requests:
        lines.append(f"  {length_line(lengths, LONG_PROMPT_TOKENS)}")
    open_breakers = sorted(breakers)
    if open_breakers:
        lines.append("  breakers: " + "; ".join(f"{router} {deployment} {state}"
                                                 for router, deployment, state in open_breakers))
    return lines


def _shares(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items()) or "-"


def phase_summary(phase: Phase, figures: Mapping[str, RegionFigures]) -> list[str]:
    lines = [f"  -- {phase.name} ({phase.start_s:.0f}-{phase.end_s:.0f} s): who served each region"]
    for region, f in figures.items():
        lines.append(f"  {region:<10} via {','.join(f.routers) or '-'} router | by deployment: "
                     f"{_shares(f.by_deployment)}")
        lines.append(f"  {'':<10} by architecture: {_shares(f.by_architecture)} | by region: "
                     f"{_shares(f.by_region)} | p50 {f.p50_ms:.0f} ms, p95 {f.p95_ms:.0f} ms, {f.errors} errors")
    return lines


def length_line(split: LengthSplit, threshold: int) -> str:
    return (f"prompts of {threshold // 1000}k+ tokens: {split.long_requests}, served by "
            f"{_shares(split.long_by_architecture)} | shorter: {split.short_requests}, served by "
            f"{_shares(split.short_by_architecture)}")


def length_lines(splits: Mapping[str, LengthSplit], threshold: int) -> list[str]:
    """Per client region (and "all"), who served the long prompts and who the shorter ones, by architecture."""
    lines = [f"  -- long prompts ({threshold // 1000}k+ tokens) and shorter ones, by architecture"]
    lines += [f"  {region:<10} {length_line(split, threshold)}" for region, split in splits.items()]
    return lines


def expectation_line(expectation: Expectation) -> str:
    mark = "PASS" if expectation.passed else ("FAIL" if expectation.required else "note")
    return f"  {mark}  {expectation.name}: {expectation.detail}"


def verdict_lines(verdict: Verdict, report_dir: str | None) -> list[str]:
    lines = ["", "== verdict"]
    lines += [expectation_line(e) for e in verdict.expectations]
    if verdict.error:
        lines.append(f"  FAIL  the demo did not run to the end: {verdict.error}")
    if report_dir:
        lines.append(f"  report: {report_dir}/report.md (+ report.json, traffic_share.png, latency.png)")
    lines.append("demo " + ("passed" if verdict.passed else "FAILED: see the FAIL lines above"))
    return lines


def router_lines(routers: Mapping[str, Sequence[str]]) -> list[str]:
    return [f"  {region:<10} {' '.join(urls)}" for region, urls in routers.items()]
