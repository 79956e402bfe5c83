"""Network latency on every link to one backend (its link saturated): traffic moves to other deployments
and clients keep their latency budget wherever another deployment can meet it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from chaos.scenarios.targets import busiest_backend, deployment_facts
from chaos.stack_handle import StackHandle
from chaos.timeline import Timeline

ADDED_LATENCY_MS = 600
SETTLE_S = 1.5
"""Time the routers get to notice (their breaker or their p95) before the budget is judged."""


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    backend = busiest_backend(handle, baseline)
    model_budget = handle.model_of(backend).latency_budget_ms
    # Without a budget in the policy, the clients must at least not pay the injected latency at p95.
    budget = model_budget if model_budget > 0 else float(ADDED_LATENCY_MS)
    proxies = [p.name for p in handle.proxies(backend=backend)]
    for name in proxies:
        handle.add_toxic(name, "chaos_backend_latency", "latency", "downstream", {"latency": ADDED_LATENCY_MS})
    return {"backend": backend, "proxies": proxies, "added_latency_ms": ADDED_LATENCY_MS, "budget_ms": budget,
            "budget_source": "policy" if model_budget > 0 else "injected latency", "settle_s": SETTLE_S,
            **deployment_facts(handle)}


SCENARIO = Scenario(
    name="backend-latency",
    description=f"{ADDED_LATENCY_MS} ms of network latency on every proxy in front of the busiest backend "
                "(its own region's and every cross-region one), as a saturated link would add.",
    injects=f"latency toxic {ADDED_LATENCY_MS} ms (downstream) on backend-<b> and xregion-*-<b>",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.traffic_moves_away(), checks.p95_within_budget()),
)
