"""cost-first: the cheapest expected request cost among deployments whose effective p95 is within the
request's latency budget; the fastest when none is; simply the cheapest when there is no budget."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest, dollars, latency_label
from data_plane.policies.latency_first import by_latency


def _by_cost(entry: Measured) -> tuple[float, float, int]:
    return entry.cost, entry.latency_ms, entry.position


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    budget_ms = request.latency_budget_ms
    label = latency_label(request)
    if budget_ms <= 0:
        order = sorted(eligible, key=_by_cost)
        best = order[0]
        return Ranking(order, f"cheapest (no budget): {dollars(best.cost)}/req "
                              f"{label}={best.latency_ms:.0f}ms")
    within = sorted((e for e in eligible if e.latency_ms <= budget_ms), key=_by_cost)
    over = sorted((e for e in eligible if e.latency_ms > budget_ms), key=by_latency)
    if not within:
        best = over[0]
        return Ranking(over, f"none under budget {budget_ms:g}ms; fastest {label}={best.latency_ms:.0f}ms")
    best = within[0]
    return Ranking(within + over, f"cheapest under budget {budget_ms:g}ms: {dollars(best.cost)}/req "
                                  f"{label}={best.latency_ms:.0f}ms")
