"""scored: w_l*(1-norm_latency) + w_c*(1-norm_cost) + w_q*quality + w_o*(1-load), with the weights a policy
push set or else the request's priority preset; the latency is this request's prediction, the load the engine's
queue and KV-cache use (engine_load); norms are min-max over the candidates ranked, every term and score is
clamped to [0, 1]."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest, UnknownPolicy
from meridian_common.policy_names import PRIORITY_PRESETS


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    if request.score_weights is not None:
        weights, named = _normalised(request.score_weights), "pushed weights"
    else:
        preset = PRIORITY_PRESETS.get(request.priority)
        if preset is None:
            raise UnknownPolicy(f"unknown priority {request.priority!r} of the scored policy; expected one of "
                                f"{', '.join(PRIORITY_PRESETS)}")
        weights, named = preset, request.priority
    w_latency, w_cost, w_quality, w_load = weights
    latencies = [e.latency_ms for e in eligible]
    costs = [e.cost for e in eligible]
    low_latency, latency_span = min(latencies), max(latencies) - min(latencies)
    low_cost, cost_span = min(costs), max(costs) - min(costs)
    for entry in eligible:
        norm_latency = (entry.latency_ms - low_latency) / latency_span if latency_span > 0 else 0.0
        norm_cost = (entry.cost - low_cost) / cost_span if cost_span > 0 else 0.0
        entry.score = _clamp(
            w_latency * (1.0 - _clamp(norm_latency))
            + w_cost * (1.0 - _clamp(norm_cost))
            + w_quality * _clamp(entry.candidate.deployment.quality)
            + w_load * (1.0 - _clamp(entry.load))
        )
    order = sorted(eligible, key=lambda e: (-(e.score or 0.0), e.latency_ms, e.position))
    return Ranking(order, f"best score {order[0].score:.3f} ({named}) of {len(order)}")


def _normalised(weights: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    total = sum(weights)
    latency, cost, quality, load = (w / total for w in weights) if total > 0 else (0.25, 0.25, 0.25, 0.25)
    return latency, cost, quality, load
