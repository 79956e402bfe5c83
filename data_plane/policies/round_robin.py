"""round-robin: the baseline; turns go round the table's deployments, skipping those not eligible."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    # `eligible` is in table order; the turn is a table position, so eligibility changes do not skew it.
    start = next((i for i, e in enumerate(eligible) if e.position >= state.next_turn), 0)
    order = eligible[start:] + eligible[:start]
    state.next_turn = order[0].position + 1
    return Ranking(order, f"round-robin: next in turn of {len(order)}")
