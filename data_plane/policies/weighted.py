"""weighted: the control plane's weights, served by smooth weighted round robin (nginx's), which follows
the weights exactly over every cycle and interleaves the picks instead of bursting."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    weights = [max(e.candidate.deployment.weight, 0.0) for e in eligible]
    total = sum(weights)
    if total <= 0:  # nothing weighted is eligible: share evenly rather than refuse
        weights = [1.0] * len(eligible)
        total = float(len(eligible))
    current = state.current_weights
    best_index = -1
    best_current = 0.0
    for index, entry in enumerate(eligible):
        weight = weights[index]
        if weight <= 0:
            continue  # a weight of 0 means "not in the split": it only serves as a fallback
        name = entry.candidate.deployment.name
        value = current.get(name, 0.0) + weight
        current[name] = value
        if best_index < 0 or value > best_current:
            best_index, best_current = index, value
    best = eligible[best_index]
    current[best.candidate.deployment.name] = best_current - total
    rest = sorted(
        (i for i in range(len(eligible)) if i != best_index),
        key=lambda i: (-weights[i], eligible[i].latency_ms, eligible[i].position),
    )
    weight = weights[best_index]
    return Ranking([best] + [eligible[i] for i in rest],
                   f"smooth weighted: weight {weight:g} of {total:g} ({weight / total:.0%})")
