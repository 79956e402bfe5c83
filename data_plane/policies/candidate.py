"""The plain values a routing decision reads and returns: candidates, the request, the decision and its
per-candidate figures, plus the small mutable state some policies carry between decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from data_plane.deployments.breaker import BreakerState
from data_plane.deployments.latency_model import ModelView
from data_plane.deployments.stats import StatsView
from data_plane.policies.exclusion import Exclusion
from data_plane.policies.prediction import Prediction
from data_plane.table.snapshot import DeploymentSpec
from meridian_common.engine_figures import EngineFigures


class TrialReason(StrEnum):
    """Why the shell says a deployment is due one request whatever its rank: without it, a deployment that
    lost its traffic would never show that it recovered."""

    HALF_OPEN = "half-open: one trial closes or re-opens its breaker"
    STALE = "no recent answer: one trial refreshes its figures"


class Candidate(NamedTuple):
    """A NamedTuple rather than a frozen dataclass: one is built per deployment on every request."""

    deployment: DeploymentSpec
    stats: StatsView
    breaker_state: BreakerState
    healthy: bool
    local: bool  # in the router's own region
    rate_limited: str | None = None  # why the deployment's rpm/tpm cannot take this request now
    backend_saturated: str | None = None  # the backend answered 429 and its Retry-After has not passed: for how long
    trial: TrialReason | None = None
    engine: EngineFigures | None = None  # the engine's own load figures, when fresh ones are known
    latency_model: ModelView | None = None  # the deployment's size model as fitted to this router's answers
    cached_prompt_tokens: int = 0  # how much of this request's prompt the deployment's prefix cache likely holds


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model: str
    policy: str
    latency_budget_ms: float  # a cap on the predicted latency under every policy; 0 = none
    priority: str  # scored preset
    streaming: bool
    estimated_input_tokens: int
    expected_output_tokens: int  # max_tokens, or the model's typical answer length
    local_ratio: float = 1.0  # fixed-ratio: share of requests for local deployments
    score_weights: tuple[float, float, float, float] | None = None  # scored: (latency, cost, quality, load)
    locality_margin: float = 0.0  # a remote deployment ranks as if its predicted latency were this much higher
    max_requests_waiting: int = 0  # an engine queue longer than this takes a deployment out, unless all are; 0 = off
    max_kv_cache_usage: float = 0.0  # an engine KV cache fuller than this does the same; 0 = off
    prefix_blocks: tuple[int, ...] = ()  # chained hashes of the prompt's leading blocks (prefix_index)
    requested_output_tokens: int = 0  # the request's own max_tokens, which must fit the context window; 0 = unset

    @property
    def context_tokens(self) -> int:
        """What the request needs of a context window: its prompt's estimate and the answer it allows."""
        return self.estimated_input_tokens + self.requested_output_tokens


@dataclass(frozen=True, slots=True)
class CandidateFigures:
    name: str
    region: str
    exclusion: Exclusion | None  # None when eligible
    latency_ms: float  # what the policy compared: predicted TTFT for a stream, the whole answer otherwise
    ttft_ms: float  # predicted time to first token (RTT included for a remote deployment)
    tpot_ms: float  # predicted time per output token
    predicted_ms: float  # ttft + tpot x expected output tokens
    estimate: str  # where the TTFT and TPOT came from
    cached_prompt_tokens: int  # how much of the prompt the deployment's prefix cache likely holds
    cost: float  # expected cost of this request in currency units
    load: float  # the engine's queue and KV-cache use, 0..1
    quality: float
    score: float | None  # only the scored policy scores
    in_flight: int
    breaker: str

    @property
    def eligible(self) -> bool:
        return self.exclusion is None


@dataclass(frozen=True, slots=True)
class Decision:
    policy: str
    ordered: tuple[DeploymentSpec, ...]  # the pick, then the fallback order; empty when none can serve
    reason: str
    measured: tuple[Measured, ...]  # every candidate, in table order; read through `figures`
    panic: bool = False  # every deployment was excluded and the least bad reachable one serves
    trial: str | None = None  # the deployment put first for a trial request

    @property
    def figures(self) -> tuple[CandidateFigures, ...]:
        """Every candidate's figures, built on demand: most requests never look at them."""
        return tuple(m.figures() for m in self.measured)

    @property
    def saturated(self) -> bool:
        """Some deployment is out only for being full or rate limited: a slot will free."""
        return any(m.exclusion is not None and m.exclusion.kind.is_saturation for m in self.measured)


@dataclass(slots=True)
class PolicyState:
    """Per-model state of the stateful policies; one per model, owned by the shell."""

    next_turn: int = 0  # round-robin: position in the table of the next deployment to serve
    current_weights: dict[str, float] = field(default_factory=dict)  # weighted: smooth WRR


class UnknownPolicy(ValueError):
    """The request names a policy (or a scored preset) this router does not know."""


class Measured:
    """One candidate with the figures the policies compare, computed once per decision."""

    __slots__ = ("position", "candidate", "exclusion", "prediction", "latency_ms", "ranked_ms", "cost", "load",
                 "score")

    def __init__(self, position: int, candidate: Candidate, exclusion: Exclusion | None, prediction: Prediction,
                 latency_ms: float, ranked_ms: float, cost: float, load: float) -> None:
        self.position = position
        self.candidate = candidate
        self.exclusion = exclusion
        self.prediction = prediction
        self.latency_ms = latency_ms  # what the client would wait for: the budget and the figures use it
        self.ranked_ms = ranked_ms  # what latency rankings compare: remote ones carry the locality margin
        self.cost = cost
        self.load = load  # the engine's queue and KV-cache use, 0..1 (engine_load)
        self.score: float | None = None

    @property
    def observed(self) -> bool:
        """False when neither this router nor the control plane has any figure: only the RTT is known."""
        return self.prediction.observed

    def figures(self) -> CandidateFigures:
        spec, prediction = self.candidate.deployment, self.prediction
        return CandidateFigures(
            spec.name, spec.region, self.exclusion, self.latency_ms, prediction.ttft_ms, prediction.tpot_ms,
            prediction.total_ms, prediction.describe(), self.candidate.cached_prompt_tokens, self.cost, self.load,
            spec.quality, self.score,
            self.candidate.stats.in_flight, self.candidate.breaker_state.value,
        )


class Ranking(NamedTuple):
    order: list[Measured]  # eligible candidates, preferred first
    reason: str


def latency_label(request: RouteRequest) -> str:
    return "predicted ttft" if request.streaming else "predicted latency"


def dollars(amount: float) -> str:
    text = f"{amount:.8f}".rstrip("0")
    return "$" + (text + "0" if text.endswith(".") else text)
