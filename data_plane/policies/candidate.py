"""The plain values a routing decision reads and returns: candidates, the request, the decision and its
per-candidate figures, plus the small mutable state some policies carry between decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from data_plane.breaker import BreakerState
from data_plane.stats import StatsView
from data_plane.table import DeploymentSpec


@dataclass(frozen=True, slots=True)
class Candidate:
    deployment: DeploymentSpec
    stats: StatsView
    breaker_state: BreakerState
    healthy: bool
    local: bool  # in the router's own region
    rate_limited: str | None = None  # why the deployment's rpm/tpm cannot take this request now


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model: str
    policy: str
    latency_budget_ms: float  # cost-first; 0 = no budget
    priority: str  # scored preset
    streaming: bool
    estimated_input_tokens: int
    max_output_tokens: int
    local_ratio: float = 1.0  # fixed-ratio: share of requests for local deployments


@dataclass(frozen=True, slots=True)
class CandidateFigures:
    name: str
    region: str
    eligible: bool
    excluded_because: str | None
    latency_ms: float  # effective: measured (or the table's) p95, TTFT p95 for streams, plus added latency
    cost: float  # expected cost of this request in currency units
    quality: float
    score: float | None  # only the scored policy scores
    in_flight: int
    breaker: str


@dataclass(frozen=True, slots=True)
class Decision:
    policy: str
    ordered: tuple[DeploymentSpec, ...]  # the pick, then the fallback order; empty when none is eligible
    reason: str
    figures: tuple[CandidateFigures, ...]  # every candidate, in table order


@dataclass(slots=True)
class PolicyState:
    """Per-model state of the stateful policies; one per model, owned by the shell."""

    next_turn: int = 0  # round-robin: position in the table of the next deployment to serve
    current_weights: dict[str, float] = field(default_factory=dict)  # weighted: smooth WRR


class UnknownPolicy(ValueError):
    """The request names a policy (or a scored preset) this router does not know."""


class Measured:
    """One candidate with the figures the policies compare, computed once per decision."""

    __slots__ = ("position", "candidate", "excluded_because", "latency_ms", "observed", "cost", "score")

    def __init__(self, position: int, candidate: Candidate, excluded_because: str | None, latency_ms: float,
                 observed: bool, cost: float) -> None:
        self.position = position
        self.candidate = candidate
        self.excluded_because = excluded_because
        self.latency_ms = latency_ms
        self.observed = observed  # False: no sample and no table p95, latency is only the added RTT
        self.cost = cost
        self.score: float | None = None


class Ranking(NamedTuple):
    order: list[Measured]  # eligible candidates, preferred first
    reason: str


def latency_label(request: RouteRequest) -> str:
    return "ttft p95" if request.streaming else "p95"


def dollars(amount: float) -> str:
    text = f"{amount:.8f}".rstrip("0")
    return "$" + (text + "0" if text.endswith(".") else text)
