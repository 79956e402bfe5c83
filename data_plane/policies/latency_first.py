"""latency-first: the lowest effective p95 (TTFT p95 for streams); an unobserved deployment counts as its
added latency only, so it gets explored."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest, latency_label


def by_latency(entry: Measured) -> tuple[float, int, int]:
    return entry.latency_ms, entry.candidate.stats.in_flight, entry.position


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    order = sorted(eligible, key=by_latency)
    best = order[0]
    if not best.observed:
        return Ranking(order, f"unobserved, exploring (of {len(order)})")
    return Ranking(order, f"lowest {latency_label(request)} {best.latency_ms:.1f}ms of {len(order)}")
