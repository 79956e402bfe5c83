"""Network latency on every link to one backend (its link saturated): traffic moves to other deployments,
clients' streams keep their time to first token within budget wherever another deployment can meet it, and the
backend serves its share again once the link is back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from chaos.scenarios.targets import busiest_backend, deployment_facts
from harness.stack_handle import StackHandle
from harness.timeline import Timeline

ADDED_LATENCY_MS = 600
SETTLE_S = 1.5
"""Time the routers get to notice (their breaker or their p95) before the budget is judged."""


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    backend = busiest_backend(handle, baseline)
    model_budget = handle.model_of(backend).latency_budget_ms
    # The clients must at least not pay the injected latency at p95, whatever looser budget the policy has.
    budget = min(model_budget, ADDED_LATENCY_MS) if model_budget > 0 else float(ADDED_LATENCY_MS)
    proxies = [p.name for p in handle.proxies(backend=backend)]
    for name in proxies:
        handle.add_toxic(name, "chaos_backend_latency", "latency", "downstream", {"latency": ADDED_LATENCY_MS})
    return {"backend": backend, "proxies": proxies, "added_latency_ms": ADDED_LATENCY_MS, "budget_ms": budget,
            "budget_source": "policy" if 0 < model_budget < ADDED_LATENCY_MS else "injected latency",
            "settle_s": SETTLE_S,
            **deployment_facts(handle)}


SCENARIO = Scenario(
    name="backend-latency",
    description=f"{ADDED_LATENCY_MS} ms of network latency on every proxy in front of the busiest backend "
                "(its own region's and every cross-region one), as a saturated link would add.",
    injects=f"latency toxic {ADDED_LATENCY_MS} ms (downstream) on backend-<b> and xregion-*-<b>",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.traffic_moves_away(streams_only=True), checks.ttft_p95_within_budget(),
            checks.share_back_after_recovery()),
    min_recovery_s=11.0,
)
