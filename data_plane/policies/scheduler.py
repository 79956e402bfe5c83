"""One scheduling cycle over plain values: predict each candidate's latency for this request, filter, keep
the latency budget, let the request's policy rank, give a deployment due a trial its one request, and
return the pick with its fallback order. When every deployment is excluded and none is merely busy, the
least bad one that still answers serves (Envoy's panic mode): a degraded answer beats a certain 503."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from data_plane.deployments.latency_model import request_size
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
    Decision,
    Measured,
    PolicyState,
    Ranking,
    RouteRequest,
    UnknownPolicy,
    latency_label,
)
from data_plane.policies.engine_load import engine_load, saturation_exclusion
from data_plane.policies.exclusion import ExclusionKind
from data_plane.policies.filters import exclusion, fits_context
from data_plane.policies.latency_first import by_latency
from data_plane.policies.prediction import known_figures, predict, priors
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


def measure(candidates: Sequence[Candidate], request: RouteRequest) -> list[Measured]:
    known = [known_figures(c.stats, c.deployment) for c in candidates]
    prior = priors(known)
    measured = []
    for position, (candidate, figures) in enumerate(zip(candidates, known, strict=True)):
        spec = candidate.deployment
        size = request_size(request.estimated_input_tokens, candidate.cached_prompt_tokens,
                            request.expected_output_tokens, candidate.engine, candidate.stats.in_flight)
        prediction = predict(figures, spec, prior, size, candidate.latency_model)
        cost = (spec.cost_per_1m_input * request.estimated_input_tokens
                + spec.cost_per_1m_output * request.expected_output_tokens) / 1_000_000
        latency_ms = prediction.latency_ms(request.streaming)
        ranked_ms = latency_ms if candidate.local else latency_ms * (1.0 + request.locality_margin)
        excluded = fits_context(candidate, request) or exclusion(candidate) or saturation_exclusion(
            candidate.engine, request.max_requests_waiting, request.max_kv_cache_usage)
        load = engine_load(candidate.engine, request.max_requests_waiting, candidate.stats.in_flight,
                           spec.max_concurrency)
        measured.append(Measured(position, candidate, excluded, prediction, latency_ms, ranked_ms, cost, load))
    return measured


def _eligible(measured: list[Measured]) -> tuple[list[Measured], str]:
    """The candidates no filter excludes; when the engines' saturation thresholds alone leave none, they are
    ignored: every engine is as full as the operator said is too full, and the policy still has to pick."""
    eligible = [m for m in measured if m.exclusion is None]
    if eligible:
        return eligible, ""
    saturated = [m for m in measured if m.exclusion is not None and m.exclusion.kind is ExclusionKind.ENGINE_SATURATED]
    for entry in saturated:
        entry.exclusion = None
    return saturated, f"every engine over the saturation thresholds ({len(saturated)}), thresholds ignored; "


def _within_budget(rank: Ranker, eligible: list[Measured], request: RouteRequest, state: PolicyState,
                   rng: random.Random) -> Ranking:
    """The policy ranks the deployments predicted within the budget; those over it follow, fastest first,
    and serve only when none is within (then the fastest leads)."""
    budget_ms = request.latency_budget_ms
    if budget_ms <= 0:
        return rank(eligible, request, state, rng)
    within = [m for m in eligible if m.latency_ms <= budget_ms]
    over = sorted((m for m in eligible if m.latency_ms > budget_ms), key=by_latency)
    if not within:
        return Ranking(over, f"none within the latency budget {budget_ms:g}ms; fastest "
                             f"{latency_label(request)} {over[0].latency_ms:.0f}ms")
    order, reason = rank(within, request, state, rng)
    return Ranking(order + over, reason + (f"; {len(over)} over the budget {budget_ms:g}ms" if over else ""))


def _with_trial(ranking: Ranking) -> tuple[Ranking, str | None]:
    """The first deployment due a trial (in table order) goes first, once; the policy's order follows."""
    due = min((m for m in ranking.order if m.candidate.trial is not None), key=lambda m: m.position, default=None)
    if due is None or due is ranking.order[0]:
        return ranking, None
    trial = due.candidate.trial
    assert trial is not None
    name = due.candidate.deployment.name
    order = [due] + [m for m in ranking.order if m is not due]
    return Ranking(order, f"trial of {name} ({trial.value}); then {ranking.reason}"), name


def _least_bad(measured: list[Measured]) -> Measured | None:
    """When nothing is eligible: the deployment that still answers with the fewest errors, then the fastest;
    None when something is only busy (waiting for it is better) or nothing answers at all."""
    if any(m.exclusion is not None and m.exclusion.kind.is_saturation for m in measured):
        return None
    reachable = [m for m in measured if m.exclusion is not None and m.exclusion.kind.reachable]
    return min(reachable, key=lambda m: (m.candidate.stats.error_rate, m.latency_ms, m.position), default=None)


def decide(candidates: Sequence[Candidate], request: RouteRequest, state: PolicyState,
           rng: random.Random) -> Decision:
    rank = RANKERS.get(request.policy)
    if rank is None:
        raise UnknownPolicy(f"unknown policy {request.policy!r}; expected one of {', '.join(RANKERS)}")
    measured = measure(candidates, request)
    eligible, saturated_note = _eligible(measured)
    panic, trial = False, None
    if eligible:
        ranking, trial = _with_trial(_within_budget(rank, eligible, request, state, rng))
        ordered = tuple(m.candidate.deployment for m in ranking.order)
        reason = saturated_note + ranking.reason
    else:
        excluded = "; ".join(f"{m.candidate.deployment.name} {m.exclusion}" for m in measured)
        least_bad = _least_bad(measured)
        if least_bad is not None:
            panic = True
            ordered = (least_bad.candidate.deployment,)
            reason = (f"panic: every deployment is excluded ({excluded}); least bad that answers: "
                      f"{least_bad.candidate.deployment.name}")
        else:
            ordered = ()
            reason = f"no eligible deployment of {len(measured)}: {excluded}" if measured else "no deployments"
    return Decision(request.policy, ordered, reason, tuple(measured), panic, trial)

