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

# Weights (latency, cost, quality, load) of the scored policy's presets. The load term (the engine's queue
# and KV-cache use) is small: the predicted latency already counts the queue; it separates deployments whose
# predictions tie while one of them fills up.
PRIORITY_PRESETS: Final[dict[str, tuple[float, float, float, float]]] = {
    "speed": (0.6, 0.2, 0.1, 0.1),
    "cost": (0.2, 0.6, 0.1, 0.1),
    "quality": (0.1, 0.2, 0.6, 0.1),
    "balanced": (0.35, 0.25, 0.25, 0.15),
}

ARCHITECTURES: Final = ("dense", "moe", "linear-attention", "hybrid", "other")
