"""The registry of chaos scenarios, one module each, in the order `meridian chaos run --all` runs them."""

from __future__ import annotations

from chaos.scenario import Scenario
from chaos.scenarios import (
    backend_errors,
    backend_latency,
    backend_saturation,
    control_plane_partition,
    etcd_loss,
    etcd_member_loss,
    leader_kill,
    redis_failover,
    redis_latency,
    redis_loss,
    region_partition,
    stream_cut,
)

SCENARIOS: dict[str, Scenario] = {
    module.SCENARIO.name: module.SCENARIO
    # backend-saturation before backend-latency: a backend made slow keeps a high p95 in the routers' 30 s
    # window, so latency-first would send the saturation scenario's linear-attention target nothing to shift.
    for module in (redis_loss, redis_latency, backend_saturation, backend_latency, backend_errors, stream_cut,
                   leader_kill, etcd_loss, control_plane_partition, region_partition, etcd_member_loss,
                   redis_failover)
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
