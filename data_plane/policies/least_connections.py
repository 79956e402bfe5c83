"""least-connections: the fewest requests in flight relative to capacity, counting the request being
placed, so idle deployments are split by capacity; an unlimited one counts as the largest limit seen."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    largest = max((e.candidate.deployment.max_concurrency for e in eligible), default=0) or 1

    def load(entry: Measured) -> tuple[float, int, float, int]:
        in_flight = entry.candidate.stats.in_flight
        capacity = entry.candidate.deployment.max_concurrency or largest
        return (in_flight + 1) / capacity, in_flight, entry.latency_ms, entry.position

    order = sorted(eligible, key=load)
    best = order[0].candidate
    limit = best.deployment.max_concurrency or "unlimited"
    return Ranking(order, f"least loaded {best.stats.in_flight}/{limit} in flight of {len(order)}")
