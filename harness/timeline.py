"""What a chaos run recorded: every client request, periodic probes of routers and control-plane replicas, the
fault's own events and facts, and the phase boundaries. Plain frozen values, so that every check is a pure
function of a Timeline and can be tested on a synthetic one.

Times are seconds since the run started (monotonic clock); `wall_start_unix_ms` maps them to wall-clock time
for figures the routers report in unix milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestRecord:
    start_s: float
    end_s: float
    client: str
    client_region: str
    router_region: str
    status: int
    """HTTP status; 0 when no router answered (connection error, timeout)."""
    latency_ms: float
    backend: str | None = None
    backend_region: str | None = None
    table_version: int | None = None
    error: str | None = None
    attempts: int | None = None
    reason: str | None = None
    """`x-meridian-reason`: why this deployment (its score, or the deployments that failed before it)."""
    streamed: bool = False
    ttft_ms: float | None = None
    """Streams: time to the first content chunk, as the client saw it; None otherwise."""
    output_tokens: int | None = None
    """The usage the answer reported, else a stream's content chunks; None when neither is known."""
    prompt_tokens: int | None = None
    """The prompt's size as the client built it (characters / 4, the estimate router and simulator use)."""
    requested_tokens: int | None = None
    """The request's max_tokens; None when it set none."""
    finish_reasons: int | None = None
    """Streams: how many finish reasons came (a whole stream has exactly one); None otherwise."""
    resumes: int = 0
    """Streams: how many `: meridian resumed` comments came (a backend cut it and another continued it)."""

    @property
    def ok(self) -> bool:
        """Answered 200 and, for a stream, completed (`data: [DONE]`, no error event): a failure carries `error`."""
        return self.status == 200 and self.error is None


@dataclass(frozen=True, slots=True)
class RouterProbe:
    t_s: float
    router_id: str
    region: str
    reachable: bool
    table_version: int | None = None
    table_epoch: int | None = None
    table_source: str | None = None
    control_plane_link: str | None = None
    breakers: tuple[tuple[str, str], ...] = ()
    """(deployment, breaker state) of every deployment of every model."""
    healthy: tuple[tuple[str, bool], ...] = ()
    telemetry_connected: bool | None = None
    dropped_samples: int | None = None
    buffered_batches: int | None = None
    last_flush_unix_ms: int | None = None
    limits_synced_unix_ms: int | None = None
    """When the shared rate limits last reached Redis."""
    latency_budgets_ms: tuple[tuple[str, int | None], ...] = ()
    """(model, latency budget in force) of every model: what a policy push that scenarios make changes."""

    def breaker(self, deployment: str) -> str | None:
        return next((state for name, state in self.breakers if name == deployment), None)

    def latency_budget_ms(self, model: str) -> int | None:
        return next((budget for name, budget in self.latency_budgets_ms if name == model), None)


@dataclass(frozen=True, slots=True)
class ReplicaProbe:
    t_s: float
    replica: str
    reachable: bool
    role: str | None = None
    publishing: bool | None = None
    etcd_connected: bool | None = None
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    t_s: float
    name: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Phases:
    fault_start_s: float
    fault_end_s: float
    end_s: float
    """When the load stopped."""


@dataclass(frozen=True, slots=True)
class Timeline:
    scenario: str
    phases: Phases
    requests: tuple[RequestRecord, ...] = ()
    router_probes: tuple[RouterProbe, ...] = ()
    replica_probes: tuple[ReplicaProbe, ...] = ()
    events: tuple[Event, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What the fault chose and learnt when it was injected (its target, the lease TTL...)."""
    wall_start_unix_ms: int = 0

    def unix_ms(self, t_s: float) -> float:
        return self.wall_start_unix_ms + t_s * 1000

    def requests_between(self, start_s: float, end_s: float) -> list[RequestRecord]:
        """Requests that started in [start_s, end_s)."""
        return [r for r in self.requests if start_s <= r.start_s < end_s]

    @property
    def baseline(self) -> list[RequestRecord]:
        return self.requests_between(0.0, self.phases.fault_start_s)

    @property
    def during_fault(self) -> list[RequestRecord]:
        return self.requests_between(self.phases.fault_start_s, self.phases.fault_end_s)

    @property
    def recovery(self) -> list[RequestRecord]:
        return self.requests_between(self.phases.fault_end_s, float("inf"))

    def router_ids(self) -> list[str]:
        return sorted({p.router_id for p in self.router_probes})

    def probes_of(self, router_id: str) -> list[RouterProbe]:
        return sorted((p for p in self.router_probes if p.router_id == router_id), key=lambda p: p.t_s)

    def event(self, name: str) -> Event | None:
        return next((e for e in self.events if e.name == name), None)


# --- figures over records (pure) -------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (the smallest value with at least q % of the values at or below it), q in
    [0, 100]; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def latencies_ms(records: Iterable[RequestRecord]) -> list[float]:
    return [r.latency_ms for r in records if r.ok]


def ttfts_ms(records: Iterable[RequestRecord]) -> list[float]:
    """Time to first token of the successful streams: what a client waits for before anything shows, whatever
    the answer's length (a whole answer's time mostly measures how long it is)."""
    return [r.ttft_ms for r in records if r.ok and r.streamed and r.ttft_ms is not None]


def error_count(records: Iterable[RequestRecord]) -> int:
    return sum(1 for r in records if not r.ok)


def share_by_backend(records: Iterable[RequestRecord]) -> dict[str, float]:
    """Fraction of successful requests each backend served."""
    served = [r.backend for r in records if r.ok and r.backend]
    if not served:
        return {}
    return {name: served.count(name) / len(served) for name in sorted(set(served))}


@dataclass(frozen=True, slots=True)
class PhaseFigures:
    requests: int
    errors: int
    rate_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    share: Mapping[str, float]

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "rate_per_s": round(self.rate_per_s, 2),
                "p50_ms": round(self.p50_ms, 1), "p95_ms": round(self.p95_ms, 1), "p99_ms": round(self.p99_ms, 1),
                "share": {k: round(v, 3) for k, v in self.share.items()}}


def phase_figures(records: Sequence[RequestRecord], duration_s: float) -> PhaseFigures:
    values = latencies_ms(records)
    return PhaseFigures(len(records), error_count(records), len(records) / duration_s if duration_s > 0 else 0.0,
                        percentile(values, 50), percentile(values, 95), percentile(values, 99),
                        share_by_backend(records))


def phases_figures(timeline: Timeline) -> dict[str, PhaseFigures]:
    p = timeline.phases
    return {
        "baseline": phase_figures(timeline.baseline, p.fault_start_s),
        "fault": phase_figures(timeline.during_fault, p.fault_end_s - p.fault_start_s),
        "recovery": phase_figures(timeline.recovery, p.end_s - p.fault_end_s),
    }


@dataclass(frozen=True, slots=True)
class Bin:
    start_s: float
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    served_by: Mapping[str, int]


def bins(timeline: Timeline, width_s: float = 0.5) -> list[Bin]:
    """Requests grouped by the time they finished, for plots."""
    count = max(1, int(timeline.phases.end_s / width_s + 0.999))
    grouped: list[list[RequestRecord]] = [[] for _ in range(count)]
    for record in timeline.requests:
        grouped[min(count - 1, max(0, int(record.end_s / width_s)))].append(record)
    result = []
    for index, records in enumerate(grouped):
        values = latencies_ms(records)
        served: dict[str, int] = {}
        for r in records:
            if r.ok and r.backend:
                served[r.backend] = served.get(r.backend, 0) + 1
        result.append(Bin(index * width_s, len(records), error_count(records), percentile(values, 50),
                          percentile(values, 95), served))
    return result


@dataclass(frozen=True, slots=True)
class ShareRecovery:
    """When a backend's share of the requests came back to `target` after a fault, if it did."""

    target: float
    back_at_s: float | None
    """Seconds after the recovery when the share window first reached the target; None when it did not."""
    best_share: float
    """The highest share a window reached (what to report when it never came back)."""


def share_recovery(records: Sequence[RequestRecord], backend: str, target: float, from_s: float, within_s: float,
                   window_s: float = 3.0, step_s: float = 0.5, min_requests: int = 4) -> ShareRecovery:
    """Slides a `window_s` window, by `step_s`, over requests that started from `from_s` on, up to windows that
    end `within_s` after it; a window counts when it holds at least `min_requests` successful requests and
    `backend` served at least `target` of them. `back_at_s` is where the first such window starts."""
    best = 0.0
    steps = int(max(0.0, within_s - window_s) / step_s + 1e-9) + 1
    for index in range(steps):
        start = from_s + index * step_s
        served = [r for r in records if start <= r.start_s < start + window_s and r.ok]
        if len(served) < min_requests:
            continue
        share = sum(1 for r in served if r.backend == backend) / len(served)
        best = max(best, share)
        if share >= target:
            return ShareRecovery(target, start - from_s, share)
    return ShareRecovery(target, None, best)
