"""Every router cut from every control-plane replica: they serve from their last table and re-sync after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from harness.stack_handle import StackHandle
from harness.timeline import Timeline


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    proxies = [p.name for p in handle.proxies(kind="cp-grpc")]
    for name in proxies:
        handle.disable_proxy(name)
    return {"proxies": proxies}


SCENARIO = Scenario(
    name="control-plane-partition",
    description="The table streams of every region to every replica are cut.",
    injects="disable every cp-grpc-<region>-<replica> proxy",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.routers_keep_last_table(), checks.routers_resync(),
            checks.versions_never_go_backwards()),
    # Routers retry with a jittered backoff of up to 2 s (docs/distribution.md): recovery outlasts one wait.
    min_recovery_s=5.0,
)
