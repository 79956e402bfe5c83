"""latency-first: the lowest predicted latency for this request (its TTFT for a stream), a remote deployment's
counted `locality_margin` higher so that traffic leaves its region only for a clearly faster one; a deployment
nobody has figures for yet is predicted from the others' and gets explored."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest, latency_label
from data_plane.policies.prediction import Source


def by_latency(entry: Measured) -> tuple[float, float, int, int]:
    """Ties (equal predictions, as before any figure is known) go to the less loaded engine."""
    return entry.ranked_ms, entry.load, entry.candidate.stats.in_flight, entry.position


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    order = sorted(eligible, key=by_latency)
    best = order[0]
    if not any(entry.observed or entry.prediction.ttft_source != Source.ASSUMED for entry in order):
        return Ranking(order, f"no figures yet, exploring (of {len(order)})")
    known = "" if best.observed else f" ({best.prediction.describe()})"
    return Ranking(order, f"lowest {latency_label(request)} {best.latency_ms:.0f}ms of {len(order)}{known}")
