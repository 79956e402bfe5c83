"""A backend answers 500 to everything: the router falls back before the first byte, clients see nothing, and
the backend serves its share again once it is healthy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from chaos.scenarios.targets import busiest_backend
from harness.stack_handle import StackHandle
from harness.timeline import Timeline


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    backend = busiest_backend(handle, baseline, [n for n, i in handle.backends.items() if i.get("simulated", True)])
    handle.change_simulator(backend, error_rate=1.0)
    return {"backend": backend, "settle_s": 1.0}


SCENARIO = Scenario(
    name="backend-errors",
    description="The busiest backend answers HTTP 500 to every request while another deployment is healthy.",
    injects="simulator error_rate -> 1.0 on the busiest backend",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.traffic_moves_away(), checks.share_back_after_recovery()),
    min_recovery_s=11.0,
)
