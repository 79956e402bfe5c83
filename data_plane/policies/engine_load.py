"""How loaded a deployment's engine is, as one fraction from 0 (idle) to 1 (saturated), and whether its own
signals put it over the model's saturation thresholds. Pure over plain values."""

from __future__ import annotations

from data_plane.policies.exclusion import Exclusion, ExclusionKind
from meridian_common.engine_figures import EngineFigures


def engine_load(engine: EngineFigures | None, max_requests_waiting: int, in_flight: int, max_concurrency: int
                ) -> float:
    """The larger of the KV cache's use and the queue's length as a share of its threshold (of the work in the
    engine when no threshold is set); without engine figures, this router's in-flight requests as a share of the
    deployment's concurrency limit (0 when it has none)."""
    if engine is None:
        return min(1.0, in_flight / max_concurrency) if max_concurrency > 0 else 0.0
    waiting = engine.requests_waiting
    if max_requests_waiting > 0:
        queue = waiting / max_requests_waiting
    else:
        work = waiting + engine.requests_running
        queue = waiting / work if work > 0 else 0.0
    return min(1.0, max(queue, engine.kv_cache_usage or 0.0))


def saturation_exclusion(engine: EngineFigures | None, max_requests_waiting: int, max_kv_cache_usage: float
                         ) -> Exclusion | None:
    """Out when the engine's queue is longer than `max_requests_waiting` or its KV cache fuller than
    `max_kv_cache_usage` (0 = that threshold is off)."""
    if engine is None:
        return None
    if 0 < max_requests_waiting < engine.requests_waiting:
        return Exclusion(ExclusionKind.ENGINE_SATURATED,
                         f"engine queue {engine.requests_waiting:g} waiting > {max_requests_waiting}")
    usage = engine.kv_cache_usage
    if usage is not None and 0 < max_kv_cache_usage < usage:
        return Exclusion(ExclusionKind.ENGINE_SATURATED, f"engine KV cache {usage:.0%} used > {max_kv_cache_usage:.0%}")
    return None
