"""A linear-attention backend pushed past its cliff (its capacity cut to one slot while other tenants' requests
keep it busy, so every request queues and runs past the knee): its breaker opens, traffic shifts, and once the
pressure is gone and the capacity is back it serves its share again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from chaos.scenarios.targets import busiest_backend
from harness.stack_handle import ChaosActionError, StackHandle
from harness.timeline import Timeline

SATURATED_CAPACITY = 1
PRESSURE_CONCURRENCY = 3
SETTLE_S = 1.5


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    linear = [name for name, info in handle.backends.items()
              if info["profile"] == "linear-attention" and info.get("simulated", True)]
    if not linear:
        raise ChaosActionError("the topology has no simulated linear-attention backend to saturate")
    backend = busiest_backend(handle, baseline, linear)
    breaker = handle.model_of(backend).breaker
    facts: dict[str, Any] = {"backend": backend, "capacity": SATURATED_CAPACITY, "settle_s": SETTLE_S,
                             "ttft_p95_threshold_ms": breaker.ttft_p95_threshold_ms,
                             "tpot_p95_threshold_ms": breaker.tpot_p95_threshold_ms}
    if breaker.ttft_p95_threshold_ms <= 0 and breaker.tpot_p95_threshold_ms <= 0:
        # A saturated backend is slow, not failing: only a TTFT or TPOT threshold can open its breaker.
        facts["breaker_note"] = (f"the model of {backend} has neither breaker.ttft_p95_threshold_ms nor "
                                 "tpot_p95_threshold_ms, so slowness cannot open its breaker; set them in the topology")
    # Registered first so that it is undone last: the capacity comes back, then the queue drains.
    handle.add_pressure(backend, PRESSURE_CONCURRENCY)
    handle.change_simulator(backend, capacity=SATURATED_CAPACITY)
    facts["pressure"] = f"{PRESSURE_CONCURRENCY} direct senders of realistic answers"
    return facts


SCENARIO = Scenario(
    name="backend-saturation",
    description="The busiest linear-attention backend gets one slot and other tenants' load straight at it: "
                "every request queues and runs past the profile's cliff (x9 and more), so its p95 breaks the "
                "breaker's TTFT threshold.",
    injects=f"simulator capacity -> {SATURATED_CAPACITY} plus {PRESSURE_CONCURRENCY} direct closed-loop senders on "
            "a linear-attention backend",
    inject=inject,
    # Predicted latency (a stream stuck before its first token, the health probes) often moves the traffic
    # before enough slow answers come to open the breaker: that passes too, and the report says which it was.
    checks=(checks.breaker_opens(or_traffic_left_first=True), checks.traffic_moves_away(),
            checks.share_back_after_recovery()),
    min_recovery_s=11.0,
)
