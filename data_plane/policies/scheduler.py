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
from data_plane.policies.filters import context_exclusion, exclusion
from data_plane.policies.latency_first import by_latency
from data_plane.policies.prediction import known_figures, predict, priors, routed
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
    # Read once: this loop runs for every deployment of every request.
    prompt_tokens, output_tokens = request.estimated_input_tokens, request.expected_output_tokens
    streaming, remote_factor = request.streaming, 1.0 + request.locality_margin
    max_waiting, max_kv_usage = request.max_requests_waiting, request.max_kv_cache_usage
    context_tokens = request.context_tokens
    measured = []
    for position, (candidate, figures) in enumerate(zip(candidates, known, strict=True)):
        spec, engine, in_flight = candidate.deployment, candidate.engine, candidate.stats.in_flight
        size = request_size(prompt_tokens, candidate.cached_prompt_tokens, output_tokens, engine, in_flight)
        prediction = routed(predict(figures, spec, prior, size, candidate.latency_model), figures)
        cost = (spec.cost_per_1m_input * prompt_tokens + spec.cost_per_1m_output * output_tokens) / 1_000_000
        latency_ms = prediction.latency_ms(streaming)
        ranked_ms = latency_ms if candidate.local else latency_ms * remote_factor
        excluded = (context_exclusion(spec.context_window, context_tokens) or exclusion(candidate)
                    or saturation_exclusion(engine, max_waiting, max_kv_usage))
        load = engine_load(engine, max_waiting, in_flight, spec.max_concurrency)
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

