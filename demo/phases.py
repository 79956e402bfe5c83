"""The multi-region demo's decisions over plain values: its settings and phase plan, the figures of a phase
per client region (who served it, by deployment, architecture and region), which backend to saturate, and
the expectations the exit code rests on. No I/O and no clock: the shell (`demo.run`) passes records in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.timeline import RequestRecord, error_count, latencies_ms, percentile, share_by_backend, share_recovery
from meridian_common.workload import LONG_CONTEXT as LONG_CONTEXT_WORKLOAD
from meridian_common.workload import NO_OVERRIDES, WorkloadConfig, WorkloadOverrides

BASELINE = "baseline"
LONG_CONTEXT = "long-context"
POLICY = "policy"
SATURATION = "saturation"
RECOVERY = "recovery"
PHASE_ORDER = (BASELINE, LONG_CONTEXT, POLICY, SATURATION, RECOVERY)

MOVED_MIN_SHIFT = 0.3
"""Traffic moved when some region's share vector changed by at least this much (total variation distance)."""
DROP_FACTOR = 0.5
"""The saturated backend's share must fall to at most this fraction of what it had before."""


@dataclass(frozen=True, slots=True)
class DemoSettings:
    topology_path: Path
    directory: Path
    baseline_s: float = 20.0
    long_context_s: float = 20.0
    policy_s: float = 20.0
    saturation_s: float = 20.0
    recovery_s: float = 15.0
    table_every_s: float = 5.0
    policy: str = "cost-first"
    latency_budget_ms: float = 1500.0
    """With realistic answers a whole answer takes about a second: a budget that lets cost-first choose among
    most deployments for typical answers, and caps it to the fastest for long ones."""
    saturate: str | None = None
    """The backend to saturate; None: the linear-attention one that serves the most after the push."""
    saturated_capacity: int | None = 4
    """The saturated simulator's capacity meanwhile (`/sim/config`); None leaves it as it is."""
    hog_streams: int = 8
    """Requests another tenant keeps in flight directly on the saturated backend (it bypasses the routers); twice
    the saturated capacity keeps it past its cliff even when the routers send nothing."""
    workers_per_client: int = 5
    long_context_workers: int = 2
    """Workers per client that send long prompts during the long-context phase, on top of the clients' own."""
    long_context_workload: WorkloadConfig = LONG_CONTEXT_WORKLOAD
    """What those workers send: prompts of 16k to 32k tokens, realistic answers."""
    workload: WorkloadOverrides = NO_OVERRIDES
    """Command-line changes to every client's workload, and to the other tenant's."""
    think_ms: float = 100.0
    settle_fraction: float = 0.3
    """The first part of a phase is the reaction, not the result: expectations judge what follows."""
    ack_timeout_s: float = 15.0
    reports_dir: Path | None = None
    """Default: `<directory>/.meridian/reports`."""

    @property
    def phase_seconds(self) -> Mapping[str, float]:
        return {BASELINE: self.baseline_s, LONG_CONTEXT: self.long_context_s, POLICY: self.policy_s,
                SATURATION: self.saturation_s, RECOVERY: self.recovery_s}

    def long_prompts(self) -> WorkloadConfig:
        """What the long-context workers send: the command line's answer and stream flags apply to them too,
        their prompts stay long."""
        return replace(self.workload, prompt_tokens_median=None, tiny=False).apply(self.long_context_workload)

    def problems(self) -> list[str]:
        """What is wrong with these settings, each naming its field."""
        found = [f"{name.replace('-', '_')}_s must be > 0, got {value:g}"
                 for name, value in self.phase_seconds.items() if value <= 0]
        if self.latency_budget_ms < 0:
            found.append(f"latency_budget_ms must be >= 0, got {self.latency_budget_ms:g}")
        if self.saturated_capacity is not None and self.saturated_capacity < 1:
            found.append(f"saturated_capacity must be >= 1, got {self.saturated_capacity}")
        if self.hog_streams < 0 or self.workers_per_client < 1 or self.long_context_workers < 1:
            found.append("hog_streams must be >= 0, workers_per_client and long_context_workers >= 1")
        if not 0 <= self.settle_fraction < 1:
            found.append(f"settle_fraction must be in [0, 1), got {self.settle_fraction:g}")
        return found


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    label: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)

    def settled_start(self, fraction: float) -> float:
        return self.start_s + self.duration_s * fraction


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    architecture: str
    region: str


def deployments_of(stack: Mapping[str, Any]) -> dict[str, Deployment]:
    return {name: Deployment(name, str(info["profile"]), str(info["region"]))
            for name, info in stack["backends"].items()}


def requests_in(records: Iterable[RequestRecord], start_s: float, end_s: float,
                region: str | None = None) -> list[RequestRecord]:
    """Requests that started in [start_s, end_s), of one client region or all."""
    return [r for r in records if start_s <= r.start_s < end_s and (region is None or r.client_region == region)]


def _share_by(records: Sequence[RequestRecord], key: Mapping[str, str]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for backend, share in share_by_backend(records).items():
        group = key.get(backend, "?")
        totals[group] = totals.get(group, 0.0) + share
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


@dataclass(frozen=True, slots=True)
class RegionFigures:
    requests: int
    errors: int
    rate_per_s: float
    p50_ms: float
    p95_ms: float
    routers: tuple[str, ...]
    """The router regions the clients reached."""
    by_deployment: Mapping[str, float]
    by_architecture: Mapping[str, float]
    by_region: Mapping[str, float]

    def remote_share(self, home: str) -> float:
        return sum(share for region, share in self.by_region.items() if region != home)

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "rate_per_s": round(self.rate_per_s, 2),
                "p50_ms": round(self.p50_ms, 1), "p95_ms": round(self.p95_ms, 1), "routers": list(self.routers),
                "by_deployment": _rounded(self.by_deployment), "by_architecture": _rounded(self.by_architecture),
                "by_region": _rounded(self.by_region)}


def _rounded(shares: Mapping[str, float]) -> dict[str, float]:
    return {name: round(value, 3) for name, value in shares.items()}


def region_figures(records: Sequence[RequestRecord], duration_s: float,
                   deployments: Mapping[str, Deployment]) -> RegionFigures:
    values = latencies_ms(records)
    by_deployment = dict(sorted(share_by_backend(records).items(), key=lambda item: (-item[1], item[0])))
    return RegionFigures(
        len(records), error_count(records), len(records) / duration_s if duration_s > 0 else 0.0,
        percentile(values, 50), percentile(values, 95), tuple(sorted({r.router_region for r in records})),
        by_deployment, _share_by(records, {n: d.architecture for n, d in deployments.items()}),
        _share_by(records, {n: d.region for n, d in deployments.items()}))


def phase_figures(records: Sequence[RequestRecord], phase: Phase, regions: Sequence[str],
                  deployments: Mapping[str, Deployment], settle_fraction: float = 0.0) -> dict[str, RegionFigures]:
    start = phase.settled_start(settle_fraction)
    return {region: region_figures(requests_in(records, start, phase.end_s, region), phase.end_s - start,
                                   deployments)
            for region in regions}


def backend_share(records: Sequence[RequestRecord], backend: str) -> float:
    """Fraction of all successful requests that `backend` served."""
    return share_by_backend(records).get(backend, 0.0)


def pick_backend_to_saturate(records: Sequence[RequestRecord], deployments: Mapping[str, Deployment],
                             simulated: Iterable[str]) -> str:
    """The simulated linear-attention backend serving the most (its cliff is the dramatic one), else the busiest
    simulated backend; ties by name. Raises ValueError when there is no simulated backend."""
    pool = sorted(simulated)
    if not pool:
        raise ValueError("the topology has no simulated backend the demo could saturate")
    served = share_by_backend(records)
    linear = [name for name in pool if deployments[name].architecture == "linear-attention"]
    chosen = [name for name in linear if served.get(name, 0.0) > 0] or [name for name in pool if served.get(name)]
    return max(chosen or linear or pool, key=lambda name: (served.get(name, 0.0), name))


def share_shift(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    """Total variation distance between two share vectors, 0 (same) to 1 (disjoint)."""
    names = set(before) | set(after)
    return sum(abs(before.get(n, 0.0) - after.get(n, 0.0)) for n in names) / 2


@dataclass(frozen=True, slots=True)
class Expectation:
    name: str
    passed: bool
    detail: str
    required: bool = True
    """Only required expectations decide the exit code; the others are observations worth reporting."""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "required": self.required, "detail": self.detail}


def _top(shares: Mapping[str, float], limit: int = 2) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in list(shares.items())[:limit]) or "nothing served"


def traffic_moved(before: Mapping[str, RegionFigures], after: Mapping[str, RegionFigures]) -> Expectation:
    shifts = {region: share_shift(before[region].by_deployment, after[region].by_deployment)
              for region in before if region in after}
    moved = {region: shift for region, shift in shifts.items() if shift >= MOVED_MIN_SHIFT}
    if not shifts:
        return Expectation("traffic moved after the policy push", False, "no traffic recorded")
    if not moved:
        largest = max(shifts, key=lambda region: shifts[region])
        return Expectation("traffic moved after the policy push", False,
                           f"no region's traffic moved by {MOVED_MIN_SHIFT:.0%} or more (largest: {largest} "
                           f"{shifts[largest]:.0%})")
    detail = "; ".join(f"{region}: {_top(before[region].by_deployment)} -> {_top(after[region].by_deployment)}"
                       for region in sorted(moved, key=lambda region: -moved[region]))
    return Expectation("traffic moved after the policy push", True, detail)


def saturated_share_dropped(backend: str, before: Sequence[RequestRecord],
                            during: Sequence[RequestRecord]) -> Expectation:
    name = f"{backend}'s share dropped while saturated"
    was, now = backend_share(before, backend), backend_share(during, backend)
    if was <= 0:
        return Expectation(name, False, f"{backend} served nothing before it was saturated: nothing could drop")
    passed = now <= was * DROP_FACTOR
    return Expectation(name, passed, f"{was:.0%} of all requests before, {now:.0%} while saturated "
                                     f"(expected at most {was * DROP_FACTOR:.0%})")


def breaker_opened(backend: str, states: Iterable[tuple[float, str, str, str]], phase: Phase) -> Expectation:
    """`states`: (t_s, router id, deployment, breaker state) as the routers' /routing reported them."""
    routers = sorted({router for t, router, deployment, state in states
                      if deployment == backend and state != "closed" and phase.start_s <= t < phase.end_s})
    detail = (f"open or half-open on {', '.join(routers)}" if routers
              else "never reported open (traffic may have left on latency alone)")
    return Expectation(f"{backend}'s breaker opened", bool(routers), detail, required=False)


def spilled_over(before: Mapping[str, RegionFigures], during: Mapping[str, RegionFigures]) -> Expectation:
    """Which regions served more of their clients from other regions while the backend was saturated."""
    grown = {region: (before[region].remote_share(region), figures.remote_share(region))
             for region, figures in during.items()
             if region in before and figures.remote_share(region) >= before[region].remote_share(region) + 0.1}
    if not grown:
        return Expectation("spill-over to another region", False,
                           "no region moved traffic to another region (each had a good local option)", required=False)
    detail = "; ".join(f"{region}: remote {was:.0%} -> {now:.0%} ({_top(during[region].by_region)})"
                       for region, (was, now) in sorted(grown.items()))
    return Expectation("spill-over to another region", True, detail, required=False)


RECOVERED_SHARE = 0.5
"""A recovered backend must serve at least this fraction of its share before it was saturated..."""
RECOVERED_WITHIN_S = 10.0
"""...within this long of the recovery, in some window of `share_recovery`'s width."""


def returned_after_recovery(backend: str, before: Sequence[RequestRecord], recovery: Sequence[RequestRecord],
                            recovery_start_s: float) -> Expectation:
    """Measured on traffic: the saturated backend serves at least half its former share again within 10 s."""
    name = f"{backend} serves its share again after recovery"
    was = backend_share(before, backend)
    if was <= 0:
        return Expectation(name, False, f"{backend} served nothing before it was saturated: no share to regain")
    back = share_recovery(recovery, backend, RECOVERED_SHARE * was, recovery_start_s, RECOVERED_WITHIN_S)
    if back.back_at_s is None:
        return Expectation(name, False, f"{was:.0%} of all requests before; at most {back.best_share:.0%} within "
                                        f"{RECOVERED_WITHIN_S:g} s of recovery (at least {RECOVERED_SHARE * was:.0%} "
                                        "required)")
    return Expectation(name, True, f"{was:.0%} of all requests before; {back.best_share:.0%} in the window from "
                                   f"{back.back_at_s:.1f} s after recovery (at least {RECOVERED_SHARE * was:.0%} "
                                   f"required within {RECOVERED_WITHIN_S:g} s)")


@dataclass(frozen=True, slots=True)
class Verdict:
    expectations: tuple[Expectation, ...] = field(default_factory=tuple)
    error: str | None = None
    """Why the demo could not run to the end; the expectations are then incomplete."""

    @property
    def passed(self) -> bool:
        return self.error is None and all(e.passed for e in self.expectations if e.required)


# --- the long-context phase --------------------------------------------------------------------------------------

LONG_PROMPT_TOKENS = 8000
"""A prompt this long or longer counts as long: past it, full attention's prefill and decoding cost per token grow
clearly (a dense backend's prefill per token is a quarter dearer at 8k, half at 16k), and the realistic workload
sends one in 160."""
LENGTH_FRIENDLY = ("linear-attention", "hybrid")
"""Architectures whose prefill does not grow quadratically with the prompt (hybrid: a quarter of the layers attend)."""
LONG_SHARE_MIN = 0.6
"""In the long-context phase at least this share of the long prompts must go to those architectures..."""
LONG_SHARE_MARGIN = 0.2
"""...and at least this much more than their share of the baseline's traffic (mostly short prompts)."""
LONG_MIN_REQUESTS = 10
"""Fewer long prompts than this in the phase's settled part prove nothing either way."""


def is_long(record: RequestRecord, threshold: int = LONG_PROMPT_TOKENS) -> bool:
    return record.prompt_tokens is not None and record.prompt_tokens >= threshold


@dataclass(frozen=True, slots=True)
class LengthSplit:
    """Who served long prompts and who served the others, by architecture (shares of successful requests)."""

    long_requests: int
    short_requests: int
    long_by_architecture: Mapping[str, float]
    short_by_architecture: Mapping[str, float]

    def long_share(self, architectures: Iterable[str] = LENGTH_FRIENDLY) -> float:
        return sum(self.long_by_architecture.get(a, 0.0) for a in architectures)

    def short_share(self, architectures: Iterable[str] = LENGTH_FRIENDLY) -> float:
        return sum(self.short_by_architecture.get(a, 0.0) for a in architectures)

    def as_json(self) -> dict[str, Any]:
        return {"long_prompt_tokens": LONG_PROMPT_TOKENS, "long_requests": self.long_requests,
                "short_requests": self.short_requests, "long_by_architecture": _rounded(self.long_by_architecture),
                "short_by_architecture": _rounded(self.short_by_architecture)}


def length_split(records: Sequence[RequestRecord], deployments: Mapping[str, Deployment],
                 threshold: int = LONG_PROMPT_TOKENS) -> LengthSplit:
    architecture = {name: d.architecture for name, d in deployments.items()}
    long = [r for r in records if is_long(r, threshold)]
    short = [r for r in records if not is_long(r, threshold)]
    return LengthSplit(len(long), len(short), _share_by(long, architecture), _share_by(short, architecture))


def long_prompts_moved(baseline: Sequence[RequestRecord], phase: Sequence[RequestRecord],
                       deployments: Mapping[str, Deployment]) -> Expectation:
    """Long prompts went to the architectures whose prefill does not grow quadratically: at least LONG_SHARE_MIN
    of them, and LONG_SHARE_MARGIN more than those architectures' share of the baseline's traffic."""
    name = "long prompts moved to linear-attention and hybrid backends"
    before = length_split(baseline, deployments)
    during = length_split(phase, deployments)
    was = share_of_architectures(baseline, deployments)
    if during.long_requests < LONG_MIN_REQUESTS:
        return Expectation(name, False, f"only {during.long_requests} prompts of {LONG_PROMPT_TOKENS} tokens or more "
                                        f"in the long-context phase (at least {LONG_MIN_REQUESTS} needed)")
    required = max(LONG_SHARE_MIN, was + LONG_SHARE_MARGIN)
    now = during.long_share()
    detail = (f"{now:.0%} of {during.long_requests} prompts of {LONG_PROMPT_TOKENS // 1000}k+ tokens "
              f"({_top(during.long_by_architecture, 3)}), at least {required:.0%} required; "
              f"shorter prompts meanwhile {during.short_share():.0%} ({_top(during.short_by_architecture, 3)}); "
              f"baseline {was:.0%} of all {before.long_requests + before.short_requests} requests")
    return Expectation(name, now >= required, detail)


def share_of_architectures(records: Sequence[RequestRecord], deployments: Mapping[str, Deployment],
                           architectures: Iterable[str] = LENGTH_FRIENDLY) -> float:
    shares = _share_by(records, {name: d.architecture for name, d in deployments.items()})
    return sum(shares.get(a, 0.0) for a in architectures)
