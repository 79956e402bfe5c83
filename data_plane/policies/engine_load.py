"""How loaded a deployment's engine is, as one fraction from 0 (idle) to 1 (saturated), and whether its own
signals put it over the model's saturation thresholds. Pure over plain values."""

from __future__ import annotations

from data_plane.policies.exclusion import Exclusion, ExclusionKind
from meridian_common.engine_figures import EngineFigures


def engine_load(engine: EngineFigures | None, max_requests_waiting: int, in_flight: int, max_concurrency: int
                ) -> float:
    """The engine's own load (`EngineFigures.load`); without engine figures, this router's in-flight requests as
    a share of the deployment's concurrency limit (0 when it has none)."""
    if engine is None:
        return min(1.0, in_flight / max_concurrency) if max_concurrency > 0 else 0.0
    return engine.load(max_requests_waiting)


def saturation_exclusion(engine: EngineFigures | None, max_requests_waiting: int, max_kv_cache_usage: float
                         ) -> Exclusion | None:
    """Out when the engine's queue is longer than `max_requests_waiting` or its KV cache fuller than
    `max_kv_cache_usage` (0 = that threshold is off)."""
    reason = engine.saturation(max_requests_waiting, max_kv_cache_usage) if engine is not None else None
    return Exclusion(ExclusionKind.ENGINE_SATURATED, reason) if reason is not None else None
