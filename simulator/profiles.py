"""How an architecture's latency responds to load: a pure function from (profile, load, random draw) to
multipliers of the configured time to first token and inter-token latency. No clock, no I/O."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum


class Profile(StrEnum):
    DENSE = "dense"
    MOE = "moe"
    LINEAR_ATTENTION = "linear-attention"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class Curve:
    """The shape of one profile's latency against load (load 1.0 = as many requests as capacity).

    multiplier(load) = (1 + growth * load ** exponent) * cliff(load), where cliff is 1 up to `knee_load`
    and `cliff_factor * (1 + cliff_growth * (load - knee_load))` past it. Each request then draws a
    mean-one log-normal factor of spread `jitter_sigma`.
    """

    growth: float
    exponent: float
    knee_load: float | None
    cliff_factor: float
    cliff_growth: float
    jitter_sigma: float
    itl_share: float  # how much of the TTFT growth decoding suffers too (0 = none, 1 = all of it)


@dataclass(frozen=True, slots=True)
class LatencyMultipliers:
    ttft: float
    itl: float
    jitter: float = 1.0  # the request's own draw, kept to recompute its ITL as the load changes


CURVES: dict[Profile, Curve] = {
    # Batched decoding shares the GPU smoothly: latency rises steadily and predictably with load.
    Profile.DENSE: Curve(growth=0.5, exponent=1.5, knee_load=None, cliff_factor=1.0, cliff_growth=0.0,
                         jitter_sigma=0.05, itl_share=0.5),
    # Expert routing is uneven from batch to batch, so the same load gives much more scattered latency.
    Profile.MOE: Curve(growth=0.4, exponent=1.5, knee_load=None, cliff_factor=1.0, cliff_growth=0.0,
                       jitter_sigma=0.35, itl_share=0.5),
    # Constant-size state keeps latency flat up to capacity; pushed past it (a queue forms) it falls off a
    # cliff, for prefill and decode alike: the failure reported for linear attention under production load.
    Profile.LINEAR_ATTENTION: Curve(growth=0.0, exponent=1.0, knee_load=1.0, cliff_factor=6.0,
                                    cliff_growth=2.0, jitter_sigma=0.03, itl_share=1.0),
    # Some full-attention layers among linear ones: gradual growth, then a softer cliff at the same point.
    Profile.HYBRID: Curve(growth=0.3, exponent=1.5, knee_load=1.0, cliff_factor=2.5, cliff_growth=1.0,
                          jitter_sigma=0.12, itl_share=0.75),
}

# Loads beyond this are treated as this: multipliers stay finite however deep the queue gets.
MAX_LOAD = 16.0
# The standard-normal draw is clipped so that one unlucky request cannot take an absurd time.
_MAX_Z = 4.0


def load_factor(running: int, waiting: int, capacity: int) -> float:
    """(running + waiting) / capacity: past 1.0 the server has more work than slots."""
    return (running + waiting) / capacity if capacity > 0 else MAX_LOAD


def base_multipliers(profile: Profile, load: float) -> LatencyMultipliers:
    """The profile's curve at `load`, before the per-request jitter."""
    curve = CURVES[profile]
    bounded = min(max(load, 0.0), MAX_LOAD)
    growth = 1.0 + curve.growth * bounded**curve.exponent
    if curve.knee_load is not None and bounded > curve.knee_load:
        growth *= curve.cliff_factor * (1.0 + curve.cliff_growth * (bounded - curve.knee_load))
    return LatencyMultipliers(ttft=growth, itl=1.0 + curve.itl_share * (growth - 1.0))


def latency_multipliers(profile: Profile, load: float, rng: random.Random) -> LatencyMultipliers:
    """Multipliers for one request admitted at `load`; draws exactly one number from `rng`, so equal
    seeds give equal jitter at every load and the curve's order is kept request by request."""
    sigma = CURVES[profile].jitter_sigma
    z = min(max(rng.gauss(0.0, 1.0), -_MAX_Z), _MAX_Z)
    jitter = math.exp(sigma * z - sigma * sigma / 2.0)
    base = base_multipliers(profile, load)
    return LatencyMultipliers(ttft=base.ttft * jitter, itl=base.itl * jitter, jitter=jitter)


def itl_multiplier(profile: Profile, load: float, jitter: float) -> float:
    """A running request's inter-token multiplier at the current load of the batch: decoding shares the GPU
    with whatever runs now, so a request speeds up when the batch empties and slows down when it fills, as in
    a batching engine."""
    return base_multipliers(profile, load).itl * jitter
