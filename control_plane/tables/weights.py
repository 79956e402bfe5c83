"""Weights of the weighted policy: a target from live figures, bounded, damped, published with hysteresis.

Every router reads the same table, so a weight that jumps to the fastest deployment sends every router's
traffic there at once; it slows down, the weights jump back, and the system oscillates. Three brakes stop
that: a floor and a cap on each share, an EMA with a step limit per tick, and a dead band under which a
change is not published at all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from control_plane.config import ComputeSettings
from meridian_common.engine_figures import EngineFigures, queue_wait_ms

Shares = Mapping[str, float]

# With no telemetry at all, a deployment is assumed to answer like a typical self-hosted 70B-class model
# (a few hundred ms to the first token, then about 50 tokens/s), so that an RTT weighs against a remote
# deployment in proportion to a real LLM answer rather than to a 1 ms one.
_COLD_START_TTFT_MS = 200.0
_COLD_START_TPOT_MS = 20.0

# An engine's KV cache fuller than this starts to preempt and queue requests before its TTFT shows it: the score
# is scaled down linearly from here to `_KV_FULL_FACTOR` at a full cache.
_KV_PRESSURE_FROM = 0.8
_KV_FULL_FACTOR = 0.2


@dataclass(frozen=True, slots=True)
class ScoreInput:
    """The figures one deployment's target share is derived from."""

    prior: float
    """The catalog weight, a multiplier set by the operator (1.0 by default)."""
    ttft_ms: float | None
    """Merged median time to first token, or None when too few answers were seen to trust it."""
    tpot_ms: float | None
    """Merged median time per output token, or None when too few answers were seen to trust it."""
    error_rate: float
    added_latency_ms: float
    engine: EngineFigures | None = None
    """The engine's own figures as merged from the routers that scrape it; None when none are recent."""


def engine_tpot_ms(engine: EngineFigures | None) -> float | None:
    """The pace of one answer from the engine's throughput: running sequences share its tokens/s."""
    if engine is None or not engine.generation_tokens_per_s or engine.requests_running <= 0:
        return None
    return 1000.0 * engine.requests_running / engine.generation_tokens_per_s


def kv_pressure_factor(engine: EngineFigures | None) -> float:
    """1 while the KV cache has room; down to `_KV_FULL_FACTOR` as it fills past `_KV_PRESSURE_FROM`."""
    usage = engine.kv_cache_usage if engine is not None else None
    if usage is None or usage <= _KV_PRESSURE_FROM:
        return 1.0
    filled = min(1.0, (usage - _KV_PRESSURE_FROM) / (1.0 - _KV_PRESSURE_FROM))
    return 1.0 - filled * (1.0 - _KV_FULL_FACTOR)


def _median_or(figures: Iterable[float | None], default: float) -> float:
    known = [figure for figure in figures if figure is not None]
    return statistics.median(known) if known else default


def target_scores(
    inputs: Mapping[str, ScoreInput], output_tokens: float, settings: ComputeSettings
) -> dict[str, float]:
    """prior x (1 - error rate) x KV-cache pressure / predicted latency. The predicted latency of an answer of
    `output_tokens` tokens is its service time (TTFT + TPOT x output_tokens) + the wait in the engine's queue
    (`queue_wait_ms`) + RTT: faster, healthier, nearer and less loaded deployments score higher, a deployment
    whose answers happen to be long is judged on its TPOT, not on their time, and a deployment whose queue grows
    loses share before its TTFT shows it.

    A TPOT too few answers measured comes from the engine's tokens/s when it reports them; a figure still
    missing is assumed to be the median of those known, so the deployment still gets traffic and thus data.
    """
    tpots = {name: item.tpot_ms if item.tpot_ms is not None else engine_tpot_ms(item.engine)
             for name, item in inputs.items()}
    assumed_ttft_ms = _median_or((i.ttft_ms for i in inputs.values()), _COLD_START_TTFT_MS)
    assumed_tpot_ms = _median_or(tpots.values(), _COLD_START_TPOT_MS)
    scores = {}
    for name, item in inputs.items():
        ttft_ms = item.ttft_ms if item.ttft_ms is not None else assumed_ttft_ms
        tpot_ms = tpot if (tpot := tpots[name]) is not None else assumed_tpot_ms
        service_ms = ttft_ms + tpot_ms * output_tokens
        engine = item.engine
        wait_ms = queue_wait_ms(engine.requests_waiting, engine.requests_running, service_ms) if engine else 0.0
        latency_ms = service_ms + wait_ms + item.added_latency_ms
        health = 1.0 - min(max(item.error_rate, 0.0), 1.0)
        scores[name] = item.prior * health * kv_pressure_factor(item.engine) / max(latency_ms,
                                                                                   settings.min_latency_ms)
    return scores


def share_bounds(count: int, settings: ComputeSettings) -> tuple[float, float]:
    """(floor, cap) of one share among `count`: floors never take more than half the traffic."""
    if count <= 1:
        return 1.0, 1.0
    return min(settings.min_weight, 0.5 / count), max(settings.max_weight, 1.0 / count)


def bounded_shares(raw: Mapping[str, float], floor: float, cap: float) -> dict[str, float]:
    """Shares proportional to `raw`, each clipped to [floor, cap], summing to 1.

    Solves sum(clip(s * raw_i, floor, cap)) = 1 for the scale s. The sum is piecewise linear and
    non-decreasing in s, from n*floor <= 1 to n*cap >= 1 (callers take the bounds from `share_bounds`), so
    the solution lies on the segment between the two breakpoints that straddle 1.
    """
    if not raw:
        return {}
    largest = max(raw.values())
    if largest <= 0:
        return {name: 1.0 / len(raw) for name in raw}
    # Relative to the largest, so that tiny scores (down to subnormal floats) keep their proportions; a zero
    # would stay at the floor for any scale and could make the sum unreachable under the caps.
    values = {name: max(value / largest, 1e-9) for name, value in raw.items()}

    def total(scale: float) -> float:
        return sum(min(max(scale * v, floor), cap) for v in values.values())

    low = 0.0
    for point in sorted({bound / v for v in values.values() for bound in (floor, cap)}):
        if total(point) >= 1.0:
            break
        low = point
    middle = (low + point) / 2
    free = [v for v in values.values() if floor < middle * v < cap]
    clipped_sum = sum(floor if middle * v <= floor else cap for v in values.values() if v not in free)
    slope = sum(free)
    scale = (1.0 - clipped_sum) / slope if slope > 0 else point
    shares = {name: min(max(scale * v, floor), cap) for name, v in values.items()}
    share_sum = sum(shares.values())
    return {name: share / share_sum for name, share in shares.items()}


def normalised(raw: Mapping[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    if total <= 0:
        return {name: 1.0 / len(raw) for name in raw}
    return {name: value / total for name, value in raw.items()}


def smoothing_factor(elapsed_s: float, settings: ComputeSettings) -> float:
    """The EMA factor for `elapsed_s` since the previous tick: the same time constant whatever the tick."""
    return 1.0 - math.exp(-max(elapsed_s, 0.0) / settings.weight_time_constant_s)


def _limited_step(start: Shares, goal: Shares, fraction: float, max_step: float) -> dict[str, float]:
    # Scaling the whole move (rather than clipping each share) keeps the sum at 1 and stays on the segment
    # between two points of the bounded simplex, so floors and caps still hold.
    move = {name: fraction * (goal[name] - start[name]) for name in start}
    largest = max((abs(m) for m in move.values()), default=0.0)
    if largest > max_step:
        move = {name: m * max_step / largest for name, m in move.items()}
    return {name: start[name] + move[name] for name in start}


# An EMA only approaches its target; one this close is taken as there. Otherwise a target just over the
# hysteresis from the published shares would be crossed at an unbounded, arbitrarily late tick.
CONVERGED_WITHIN = 0.005


def damped(previous: Shares, target: Shares, fraction: float, max_step: float) -> dict[str, float]:
    """One EMA step from `previous` towards `target` (same keys), no share moving more than `max_step`."""
    step = _limited_step(previous, target, fraction, max_step)
    within_a_step = all(abs(target[name] - previous[name]) <= max_step for name in step)
    if within_a_step and all(abs(step[name] - target[name]) <= CONVERGED_WITHIN for name in step):
        return dict(target)
    return step


def published(previous: Shares, smoothed: Shares, hysteresis: float, max_step: float) -> dict[str, float]:
    """The shares to publish: unchanged while every smoothed share is within `hysteresis` of them."""
    if all(abs(smoothed[name] - previous[name]) <= hysteresis for name in previous):
        return dict(previous)
    return _limited_step(previous, smoothed, 1.0, max_step)


def carried_over(
    previous: Shares | None, names: Mapping[str, float], floor: float, cap: float
) -> dict[str, float]:
    """Previous shares restricted to the deployments in `names` (which maps each to its starting share if it
    is new), renormalised inside [floor, cap]: an ejection redistributes its share at once."""
    values = {name: (previous or {}).get(name, start) for name, start in names.items()}
    return bounded_shares(values, floor, cap)
