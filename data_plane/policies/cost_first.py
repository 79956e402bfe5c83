"""cost-first: the cheapest expected cost of this request. The latency budget (the request's
`x-latency-budget-ms` or the model's) is kept by the scheduler for every policy: this ranks the deployments
predicted within it, and the fastest serves when none is."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest, dollars, latency_label


def _by_cost(entry: Measured) -> tuple[float, float, int]:
    return entry.cost, entry.latency_ms, entry.position


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    order = sorted(eligible, key=_by_cost)
    best = order[0]
    within = f" within the budget {request.latency_budget_ms:g}ms" if request.latency_budget_ms > 0 else ""
    return Ranking(order, f"cheapest{within}: {dollars(best.cost)}/req {latency_label(request)} "
                          f"{best.latency_ms:.0f}ms")
