"""NetworkPolicies: nothing reaches a Meridian pod unless a policy here lets it. Routers reach backends, Redis, the
control plane and each other (peer health); only the control plane reaches etcd (and etcd members each other)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from regions.deploy import images
from regions.deploy.k8s_configs import CONTROL_PLANE
from regions.deploy.k8s_objects import NAMESPACE, component_selector, metadata
from regions.deploy.k8s_stores import ETCD, REDIS
from regions.topology import Topology

_DNS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def _ports(*numbers: int) -> list[dict[str, Any]]:
    return [{"port": number, "protocol": "TCP"} for number in numbers]


def _from(component: str, region: str | None = None) -> dict[str, Any]:
    return {"podSelector": component_selector(component, region)}


def _policy(name: str, component: str, pods: Mapping[str, Any], *, ingress: Iterable[dict[str, Any]] | None = None,
            egress: Iterable[dict[str, Any]] | None = None, region: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": dict(pods), "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = list(ingress)
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = list(egress)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata(name, component, region), "spec": spec}


# Outside the namespace: a cluster's Prometheus, scraping what the pod annotations advertise.
_OTHER_NAMESPACES = {"namespaceSelector": {"matchExpressions": [
    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]}]}}


def namespace_policies() -> list[dict[str, Any]]:
    return [
        # Every pod of the namespace: no ingress but what the policies below allow.
        _policy("default-deny-ingress", "network", {}, ingress=[]),
        _policy(ETCD, ETCD, component_selector(ETCD), ingress=[
            {"from": [_from(CONTROL_PLANE)], "ports": _ports(images.ETCD_CLIENT_PORT)},
            {"from": [_from(ETCD)], "ports": _ports(images.ETCD_CLIENT_PORT, images.ETCD_PEER_PORT)},
        ]),
        _policy(REDIS, REDIS, component_selector(REDIS), ingress=[
            {"from": [_from("router"), _from(CONTROL_PLANE)], "ports": _ports(images.REDIS_PORT)},
        ]),
        _policy(CONTROL_PLANE, CONTROL_PLANE, component_selector(CONTROL_PLANE), ingress=[
            {"from": [_from("router")], "ports": _ports(images.CONTROL_PLANE_GRPC_PORT)},
            # The admin API (token required) and /metrics, for operators and Prometheus.
            {"ports": _ports(images.CONTROL_PLANE_ADMIN_PORT, images.CONTROL_PLANE_ADMIN_GRPC_PORT)},
        ], egress=[
            {"to": [_from(ETCD)], "ports": _ports(images.ETCD_CLIENT_PORT)},
            {"to": [_from(REDIS)], "ports": _ports(images.REDIS_PORT)},
            {"ports": _DNS},
        ]),
    ]


def router_policy(topology: Topology, region: str, name: str) -> dict[str, Any]:
    return _policy(name, "router", component_selector("router", region), region=region, ingress=[
        {"ports": _ports(images.ROUTER_PORT)},  # clients, from wherever the Service is exposed
    ], egress=[
        {"to": [_from("backend")], "ports": _ports(images.SIMULATOR_PORT)},
        *_real_backend_egress(topology),
        {"to": [_from(REDIS)], "ports": _ports(images.REDIS_PORT)},
        {"to": [_from(CONTROL_PLANE)], "ports": _ports(images.CONTROL_PLANE_GRPC_PORT)},
        # GET /v1/regions probes every region's routers (`peers`) for their health.
        {"to": [_from("router")], "ports": _ports(images.ROUTER_PORT)},
        {"ports": _DNS},
    ])


def _real_backend_egress(topology: Topology) -> list[dict[str, Any]]:
    """A backend outside the cluster is known by URL, not by pod: its port is open to any address."""
    ports = sorted({_port(str(b.url)) for _, b in topology.backends() if not b.simulated})
    return [{"ports": _ports(*ports)}] if ports else []


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def backend_policy(region: str) -> dict[str, Any]:
    return _policy(f"backends-{region}", "backend", component_selector("backend", region), region=region, ingress=[
        {"from": [_from("router"), _OTHER_NAMESPACES], "ports": _ports(images.SIMULATOR_PORT)},
    ])
