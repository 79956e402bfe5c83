"""fixed-ratio: a draw per request sends `local_ratio` of the traffic to this region's deployments and
the rest to remote ones, the lowest latency first within each group; an empty group spills over."""

from __future__ import annotations

import random

from data_plane.policies.candidate import Measured, PolicyState, Ranking, RouteRequest, latency_label
from data_plane.policies.latency_first import by_latency


def rank(eligible: list[Measured], request: RouteRequest, state: PolicyState, rng: random.Random) -> Ranking:
    local = sorted((e for e in eligible if e.candidate.local), key=by_latency)
    remote = sorted((e for e in eligible if not e.candidate.local), key=by_latency)
    drew_local = rng.random() < request.local_ratio
    preferred, other = (local, remote) if drew_local else (remote, local)
    drawn = "local" if drew_local else "remote"
    share = f"local share {request.local_ratio:.0%}"
    if not preferred:
        best = other[0]
        region = best.candidate.deployment.region
        return Ranking(other, f"{share}: drew {drawn}, none eligible; spilled to {region} "
                              f"{latency_label(request)} {best.latency_ms:.1f}ms")
    best = preferred[0]
    return Ranking(preferred + other,
                   f"{share}: drew {drawn}, lowest {latency_label(request)} {best.latency_ms:.1f}ms")
