"""The compose stack's wiring for a topology: service names, the Toxiproxy proxies with fixed ports (the
launcher's proxy names, so `meridian chaos` breaks the same links), and the Meridian configs, made by the
launcher's own generators with container addresses in place of 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regions.deploy.images import (
    CONTROL_PLANE_ADMIN_GRPC_PORT,
    CONTROL_PLANE_ADMIN_PORT,
    CONTROL_PLANE_GRPC_PORT,
    ROUTER_PORT,
    SIMULATOR_PORT,
    STATE_DIR,
)
from regions.launcher import CONTROL_PLANE_REPLICAS
from regions.stack_config import (
    ProxySpec,
    RouterPlan,
    control_plane_config,
    control_plane_proxies,
    cp_grpc_proxies,
    data_plane_proxies,
    router_config,
    simulator_url,
)
from regions.topology import BackendSpec, Topology

TOXIPROXY = "toxiproxy"
TOXIPROXY_API_PORT = 8474
ETCD_ADDRESS = "etcd:2379"
REDIS_ADDRESS = "redis:6379"

# Proxy listen ports by kind: the first port of each kind, and the step between regions (cp-grpc only).
_FIRST_PORT = {"etcd": 12379, "redis-cp": 16390, "redis": 16379, "cp-grpc": 15051, "backend": 17001,
               "xregion": 17101}
_CP_GRPC_REGION_STEP = 100
_KIND_ORDER = tuple(_FIRST_PORT)
_FIRST_ROUTER_HOST_PORT = 8081
_FIRST_SIMULATOR_HOST_PORT = 9101
_REPLICA_ADMIN_HOST_PORT_STEP = 1000


class PortPlanError(ValueError):
    """The topology is too large for the compose stack's fixed port ranges; the message names the clash."""


def simulator_service(backend: BackendSpec) -> str:
    return f"sim-{backend.name}"


def router_service(region: str) -> str:
    return f"router-{region}"


def control_plane_service(replica: str) -> str:
    return f"control-plane-{CONTROL_PLANE_REPLICAS.index(replica) + 1}"


@dataclass(frozen=True, slots=True)
class ComposePlan:
    topology: Topology
    proxies: tuple[ProxySpec, ...]
    """In deploy/toxiproxy.json's order: control-plane links, Redis, table streams, backends, cross-region."""
    listens: Mapping[str, str]
    """Proxy name -> the `toxiproxy:port` clients of that link call."""
    backend_urls: Mapping[str, str]
    """Backend name -> its direct base URL (its simulator's service, or the topology's url)."""

    @property
    def regions(self) -> list[str]:
        return list(self.topology.regions)

    @property
    def simulated(self) -> list[tuple[str, BackendSpec]]:
        return [(region, backend) for region, backend in self.topology.backends() if backend.simulated]

    def router_host_port(self, region: str) -> int:
        return _FIRST_ROUTER_HOST_PORT + self.regions.index(region)

    def simulator_host_port(self, backend: BackendSpec) -> int:
        return _FIRST_SIMULATOR_HOST_PORT + [b.name for _, b in self.simulated].index(backend.name)

    def replica_admin_host_port(self, replica: str) -> int:
        return CONTROL_PLANE_ADMIN_PORT + _REPLICA_ADMIN_HOST_PORT_STEP * CONTROL_PLANE_REPLICAS.index(replica)

    def router_plans(self) -> list[RouterPlan]:
        """One router per region, `port` being where clients on the host reach it (its public URL)."""
        return [RouterPlan(region, f"{region}-1", self.router_host_port(region)) for region in self.regions]


def plan_compose(topology: Topology) -> ComposePlan:
    backend_urls = {backend.name: simulator_url(f"{simulator_service(backend)}:{SIMULATOR_PORT}")
                    if backend.simulated else str(backend.url) for _, backend in topology.backends()}
    replicas = {replica: f"{control_plane_service(replica)}:{CONTROL_PLANE_GRPC_PORT}"
                for replica in CONTROL_PLANE_REPLICAS}
    specs = [*control_plane_proxies(ETCD_ADDRESS, REDIS_ADDRESS), *cp_grpc_proxies(topology, replicas),
             *data_plane_proxies(topology, REDIS_ADDRESS, backend_urls)]
    specs.sort(key=lambda spec: _KIND_ORDER.index(spec.kind))
    return ComposePlan(topology, tuple(specs), _listen_ports(specs, list(topology.regions)), backend_urls)


def _listen_ports(specs: Iterable[ProxySpec], regions: list[str]) -> dict[str, str]:
    seen: dict[str, int] = {}
    ports: dict[int, str] = {}
    listens = {}
    for spec in specs:
        if spec.kind == "cp-grpc":
            assert spec.region is not None and spec.replica is not None
            port = (_FIRST_PORT["cp-grpc"] + _CP_GRPC_REGION_STEP * regions.index(spec.region)
                    + CONTROL_PLANE_REPLICAS.index(spec.replica))
        else:
            port = _FIRST_PORT[spec.kind] + seen.get(spec.kind, 0)
            seen[spec.kind] = seen.get(spec.kind, 0) + 1
        if port in ports:
            raise PortPlanError(f"proxies {ports[port]} and {spec.name} would both listen on port {port}: the compose "
                                "stack's port ranges hold 10 regions and 99 backends")
        ports[port] = spec.name
        listens[spec.name] = f"{TOXIPROXY}:{port}"
    return listens


# --- documents ---------------------------------------------------------------------------------------------

def toxiproxy_document(plan: ComposePlan) -> list[dict[str, Any]]:
    """deploy/toxiproxy.json: Toxiproxy's -config format (its /populate body), field names as Toxiproxy has them."""
    return [{"name": spec.name, "listen": f"0.0.0.0:{plan.listens[spec.name].rsplit(':', 1)[1]}",
             "upstream": spec.upstream, "enabled": True} for spec in plan.proxies]


def latency_calls(plan: ComposePlan) -> list[str]:
    """The `add_latency PROXY UP DOWN` lines of deploy/toxiproxy-latency.sh, one per cross-region proxy."""
    lines = []
    for spec in plan.proxies:
        if spec.kind != "xregion":
            continue
        assert spec.region is not None and spec.to_region is not None
        rtt = plan.topology.rtt_ms(spec.region, spec.to_region)
        lines.append(f"add_latency {spec.name} {spec.latency_upstream_ms} {spec.latency_downstream_ms}"
                     f"    # {spec.region} -> {spec.to_region}: RTT {rtt:g} ms")
    return lines


def control_plane_document(plan: ComposePlan) -> dict[str, Any]:
    """deploy/control-plane.yaml, shared by the replicas (each one's command gives its --replica-id)."""
    document = control_plane_config(plan.topology, CONTROL_PLANE_REPLICAS[0], backend_urls=plan.backend_urls,
                                    listens=plan.listens)
    del document["replica_id"]
    return {
        **document,
        "grpc": {"host": "0.0.0.0", "port": CONTROL_PLANE_GRPC_PORT},
        "admin": {**document["admin"], "host": "0.0.0.0", "port": CONTROL_PLANE_ADMIN_PORT,
                  "grpc_port": CONTROL_PLANE_ADMIN_GRPC_PORT},
        # A compose network is not loopback; outside a dev stack give tls.cert_file and key_file instead.
        "tls": {"allow_plaintext": True},
    }


def router_document(plan: ComposePlan, region: str) -> dict[str, Any]:
    """deploy/routers/<region>.yaml: the launcher's router config, listening on the container's port."""
    plans = plan.router_plans()
    document = router_config(plan.topology, plans[plan.regions.index(region)], all_routers=plans,
                             replicas=CONTROL_PLANE_REPLICAS, backend_urls=plan.backend_urls, listens=plan.listens,
                             state_dir=Path(STATE_DIR))
    return {
        **document,
        "listen": {"host": "0.0.0.0", "port": ROUTER_PORT},
        # A compose network is not loopback; outside a dev stack give control_plane.ca_file instead.
        "control_plane": {**document["control_plane"], "allow_plaintext": True},
    }
