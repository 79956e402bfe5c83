"""The names both planes agree on: routing policies, scored-policy presets, breaker states."""

from __future__ import annotations

from typing import Final

LATENCY_FIRST: Final = "latency-first"
COST_FIRST: Final = "cost-first"
WEIGHTED: Final = "weighted"
SCORED: Final = "scored"
LEAST_CONNECTIONS: Final = "least-connections"
ROUND_ROBIN: Final = "round-robin"
FIXED_RATIO: Final = "fixed-ratio"

POLICIES: Final = (LATENCY_FIRST, COST_FIRST, WEIGHTED, SCORED, LEAST_CONNECTIONS, ROUND_ROBIN, FIXED_RATIO)

# Weights (latency, cost, quality) of the scored policy's presets.
PRIORITY_PRESETS: Final[dict[str, tuple[float, float, float]]] = {
    "speed": (0.7, 0.1, 0.2),
    "cost": (0.1, 0.7, 0.2),
    "quality": (0.1, 0.1, 0.8),
    "balanced": (0.34, 0.33, 0.33),
}

ARCHITECTURES: Final = ("dense", "moe", "linear-attention", "hybrid", "other")
