"""The control-plane and router configs of the cluster: the catalog and routing defaults the launcher writes
(`models_section`), with Service names for addresses and no Toxiproxy in between."""

from __future__ import annotations

from typing import Any

from regions.deploy.images import (
    CONTROL_PLANE_ADMIN_GRPC_PORT,
    CONTROL_PLANE_ADMIN_PORT,
    CONTROL_PLANE_GRPC_PORT,
    ROUTER_PORT,
    SIMULATOR_PORT,
    STATE_DIR,
)
from regions.deploy.k8s_objects import NAMESPACE
from regions.deploy.k8s_stores import etcd_endpoints, redis_url
from regions.stack_config import (
    ADMIN_TOKEN_ENV,
    ETCD_PREFIX,
    ROUTER_HEALTH_CHECK,
    ControlPlaneSettings,
    data_plane_proxies,
    models_section,
    simulator_url,
)
from regions.topology import BackendSpec, Topology

CONTROL_PLANE = "control-plane"


def router_name(region: str) -> str:
    return f"router-{region}"


def simulator_name(backend: BackendSpec) -> str:
    return f"sim-{backend.name}"


def service_url(name: str, port: int) -> str:
    """A Service's URL from any namespace of the cluster."""
    return f"http://{name}.{NAMESPACE}.svc:{port}"


def backend_urls(topology: Topology) -> dict[str, str]:
    return {b.name: simulator_url(f"{simulator_name(b)}:{SIMULATOR_PORT}") if b.simulated else str(b.url)
            for _, b in topology.backends()}


def _direct_links(topology: Topology) -> dict[str, str]:
    """No Toxiproxy in a cluster: every link the launcher proxies goes straight to its upstream."""
    return {spec.name: spec.upstream for spec in data_plane_proxies(topology, "", backend_urls(topology))}


def _models(topology: Topology, region: str | None) -> dict[str, Any]:
    return models_section(topology, backend_urls(topology), _direct_links(topology), region)


def control_plane_document(topology: Topology) -> dict[str, Any]:
    """Shared by the replicas; each one's --replica-id is its pod's name."""
    settings = ControlPlaneSettings()
    return {
        "etcd": {"endpoints": etcd_endpoints(), "prefix": ETCD_PREFIX},
        "redis_url": redis_url(),
        "grpc": {"host": "0.0.0.0", "port": CONTROL_PLANE_GRPC_PORT},
        "admin": {"host": "0.0.0.0", "port": CONTROL_PLANE_ADMIN_PORT, "grpc_port": CONTROL_PLANE_ADMIN_GRPC_PORT,
                  "token_env": ADMIN_TOKEN_ENV},
        # In-cluster traffic, fenced by the NetworkPolicies; `tls` (docs/control-plane-operations.md) adds certificates.
        "tls": {"allow_plaintext": True},
        "lease_ttl_s": settings.lease_ttl_s,
        "tick_s": settings.tick_s,
        "telemetry_window_s": settings.telemetry_window_s,
        "regions": {name: {"rtt_ms": dict(region.rtt_ms)} for name, region in topology.regions.items()},
        "models": _models(topology, None),
    }


def router_document(topology: Topology, region: str) -> dict[str, Any]:
    """Shared by the region's router pods; each one's id is region-hostname-pid (the pod's name is its hostname)."""
    return {
        "region": region,
        "listen": {"host": "0.0.0.0", "port": ROUTER_PORT},
        "public_url": service_url(router_name(region), ROUTER_PORT),
        "admin_token_env": ADMIN_TOKEN_ENV,
        "redis_url": redis_url(),
        # One Service in front of both replicas: a reconnect lands on whichever is ready.
        "control_plane": {"targets": [f"{CONTROL_PLANE}:{CONTROL_PLANE_GRPC_PORT}"], "allow_plaintext": True},
        "state_dir": STATE_DIR,
        "peers": {other: [service_url(router_name(other), ROUTER_PORT)] for other in topology.regions},
        "health_check": dict(ROUTER_HEALTH_CHECK),
        "models": _models(topology, region),
    }
