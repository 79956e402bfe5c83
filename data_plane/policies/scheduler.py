"""One scheduling cycle over plain values: measure each candidate once, filter, let the request's policy
rank the eligible ones (scoring them if it scores), and return the pick with its fallback order."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from data_plane.policies import (
    cost_first,
    fixed_ratio,
    latency_first,
    least_connections,
    round_robin,
    scored,
    weighted,
)
from data_plane.policies.candidate import (
    Candidate,
    CandidateFigures,
    Decision,
    Measured,
    PolicyState,
    Ranking,
    RouteRequest,
    UnknownPolicy,
)
from data_plane.policies.filters import excluded_because
from meridian_common import policy_names

Ranker = Callable[[list[Measured], RouteRequest, PolicyState, random.Random], Ranking]

RANKERS: Mapping[str, Ranker] = MappingProxyType({
    policy_names.LATENCY_FIRST: latency_first.rank,
    policy_names.COST_FIRST: cost_first.rank,
    policy_names.WEIGHTED: weighted.rank,
    policy_names.SCORED: scored.rank,
    policy_names.LEAST_CONNECTIONS: least_connections.rank,
    policy_names.ROUND_ROBIN: round_robin.rank,
    policy_names.FIXED_RATIO: fixed_ratio.rank,
})


def measure(position: int, candidate: Candidate, request: RouteRequest) -> Measured:
    spec = candidate.deployment
    stats = candidate.stats
    own_ms = stats.ttft_p95_ms if request.streaming else stats.p95_ms
    if not request.streaming:
        # A request outstanding for longer than the p95 is the freshest evidence of a slower backend. (A
        # stream in flight is mostly generating, so its age says nothing about time to first token.)
        own_ms = max(own_ms, stats.oldest_in_flight_ms)
    if own_ms > 0:
        # This router's own requests crossed the inter-region link, so its samples hold the RTT already;
        # adding `added_latency_ms` again would count it twice and keep spill-over from ever looking right.
        latency_ms, observed = own_ms, True
    else:
        # The control plane's merged view (or nothing yet), plus the RTT to the deployment's region.
        latency_ms, observed = spec.p95_ms + spec.added_latency_ms, spec.p95_ms > 0
    cost = (spec.cost_per_1m_input * request.estimated_input_tokens
            + spec.cost_per_1m_output * request.max_output_tokens) / 1_000_000
    return Measured(position, candidate, excluded_because(candidate), latency_ms, observed, cost)


def decide(candidates: Sequence[Candidate], request: RouteRequest, state: PolicyState,
           rng: random.Random) -> Decision:
    rank = RANKERS.get(request.policy)
    if rank is None:
        raise UnknownPolicy(f"unknown policy {request.policy!r}; expected one of {', '.join(RANKERS)}")
    measured = [measure(position, c, request) for position, c in enumerate(candidates)]
    eligible = [m for m in measured if m.excluded_because is None]
    if eligible:
        order, reason = rank(eligible, request, state, rng)
        ordered = tuple(m.candidate.deployment for m in order)
    else:
        ordered = ()
        excluded = "; ".join(f"{m.candidate.deployment.name} {m.excluded_because}" for m in measured)
        reason = f"no eligible deployment of {len(measured)}: {excluded}" if measured else "no deployments"
    figures = tuple(
        CandidateFigures(
            m.candidate.deployment.name,
            m.candidate.deployment.region,
            m.excluded_because is None,
            m.excluded_because,
            m.latency_ms,
            m.cost,
            m.candidate.deployment.quality,
            m.score,
            m.candidate.stats.in_flight,
            m.candidate.breaker_state.value,
        )
        for m in measured
    )
    return Decision(request.policy, ordered, reason, figures)
