"""One region's backends unreachable from everywhere: its clients are served by other regions' deployments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from harness.stack_handle import ChaosActionError, StackHandle
from harness.timeline import Timeline

SETTLE_S = 0.5


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    client_regions = {r.client_region for r in baseline.requests}
    homes = {info["region"] for info in handle.backends.values()}
    # A region with clients whose model has deployments elsewhere too; the first such in stack order.
    region = next((r for r in handle.regions if r in client_regions and homes - {r}), None)
    if region is None:
        raise ChaosActionError("no region with clients has backends elsewhere to fall back on")
    proxies = [p.name for p in handle.proxies(to_region=region)]
    for name in proxies:
        handle.disable_proxy(name)
    return {"region": region, "proxies": proxies, "settle_s": SETTLE_S}


SCENARIO = Scenario(
    name="region-partition",
    description="Every proxy in front of one region's backends (from its own routers and from other regions) "
                "is disabled.",
    injects="disable backend-<b> and xregion-*-<b> of every backend of one region",
    inject=inject,
    # Disabling a proxy closes its connections: a stream that was answering is cut, like in a real partition.
    checks=(checks.zero_client_errors(excuse_streams_cut_at_the_fault=True), checks.served_by_other_regions()),
)
