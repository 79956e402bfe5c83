"""Redis cut for the routers and the control plane: requests never notice, telemetry buffers and resumes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario, StackFeature
from harness.stack_handle import StackHandle
from harness.timeline import Timeline

RESUME_LIMIT_S = 2.0


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    proxies = [p.name for p in handle.proxies(kind="redis") + handle.proxies(kind="redis-cp")]
    for name in proxies:
        handle.disable_proxy(name)
    return {"proxies": proxies}


SCENARIO = Scenario(
    name="redis-loss",
    description="Every link to Redis is cut (routers' telemetry, cache and shared limits; the control plane's "
                "telemetry reader). Routers keep routing on their own observations and buffer telemetry.",
    injects="disable the redis-<region> and redis-cp proxies",
    inject=inject,
    checks=(
        checks.zero_client_errors(),
        checks.routing_continues(),
        checks.telemetry_disconnected_during_fault(),
        checks.telemetry_resumes_within(RESUME_LIMIT_S),
        checks.dropped_samples_reported(),
    ),
    needs=frozenset({StackFeature.PROXIED_REDIS}),
)
