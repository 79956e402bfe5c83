"""A linear-attention backend pushed past its cliff (its capacity cut to one slot while other tenants' requests
keep it busy, so every request queues and runs past the knee): its breaker opens, traffic shifts, and it is
re-admitted once the pressure is gone and the capacity is back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from chaos.scenarios.targets import busiest_backend
from chaos.stack_handle import ChaosActionError, StackHandle
from chaos.timeline import Timeline

SATURATED_CAPACITY = 1
PRESSURE_CONCURRENCY = 3
PRESSURE_MAX_TOKENS = 8
SETTLE_S = 1.5


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    linear = [name for name, info in handle.backends.items()
              if info["profile"] == "linear-attention" and info.get("simulated", True)]
    if not linear:
        raise ChaosActionError("the topology has no simulated linear-attention backend to saturate")
    backend = busiest_backend(handle, baseline, linear)
    breaker = handle.model_of(backend).breaker
    facts: dict[str, Any] = {"backend": backend, "capacity": SATURATED_CAPACITY, "settle_s": SETTLE_S,
                             "p95_threshold_ms": breaker.p95_threshold_ms}
    if breaker.p95_threshold_ms <= 0:
        # A saturated backend is slow, not failing: only a latency threshold can open its breaker.
        facts["breaker_note"] = (f"the model of {backend} has no breaker.p95_threshold_ms, so slowness cannot "
                                 "open its breaker; set one in the topology")
    # Registered first so that it is undone last: the capacity comes back, then the queue drains.
    handle.add_pressure(backend, PRESSURE_CONCURRENCY, PRESSURE_MAX_TOKENS)
    handle.change_simulator(backend, capacity=SATURATED_CAPACITY)
    facts["pressure"] = f"{PRESSURE_CONCURRENCY} direct senders, {PRESSURE_MAX_TOKENS} tokens each"
    return facts


SCENARIO = Scenario(
    name="backend-saturation",
    description="The busiest linear-attention backend gets one slot and other tenants' load straight at it: "
                "every request queues and runs past the profile's cliff (x9 and more), so its p95 breaks the "
                "breaker's threshold.",
    injects=f"simulator capacity -> {SATURATED_CAPACITY} plus {PRESSURE_CONCURRENCY} direct closed-loop senders on "
            "a linear-attention backend",
    inject=inject,
    checks=(checks.breaker_opens(), checks.traffic_moves_away(), checks.readmitted_after_recovery()),
)
