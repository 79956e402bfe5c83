"""Meridian's own workloads in the cluster: the control plane (2 replicas), a router Deployment per region
that scales on CPU, and the topology's simulated backends."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from regions.deploy import images
from regions.deploy.files import yaml_text
from regions.deploy.k8s_configs import (
    CONTROL_PLANE,
    control_plane_document,
    router_document,
    router_name,
    simulator_name,
)
from regions.deploy.k8s_objects import (
    ADMIN_SECRET,
    ADMIN_SECRET_KEY,
    BACKEND_KEYS_SECRET,
    RESTRICTED_CONTAINER,
    config_map,
    container_ports,
    disruption_budget,
    http_probe,
    metadata,
    pod_name_env,
    pod_template,
    resources,
    scrape_annotations,
    secret_env,
    selector,
    service,
    spread_over_nodes,
)
from regions.deploy.options import RenderOptions
from regions.stack_config import ADMIN_TOKEN_ENV, simulator_argv
from regions.topology import BackendSpec, Topology

CONTROL_PLANE_REPLICAS = 2
ROUTER_MIN_REPLICAS = 2
ROUTER_MAX_REPLICAS = 10
ROUTER_TARGET_CPU_PERCENT = 70
MERIDIAN_UID = 10001
"""The `meridian` user of the repository's Dockerfile."""
_CONFIG_DIR = "/etc/meridian"


def _config_map_file(name: str, component: str, file_name: str, document: dict[str, Any], header: list[str],
                     region: str | None = None) -> dict[str, Any]:
    return config_map(name, component, {file_name: yaml_text([document], header)}, region=region)


def _config_annotation(config: dict[str, Any]) -> dict[str, str]:
    """Pods read their config once: a changed ConfigMap must change the pod template too, so that applying a new
    render rolls them."""
    digest = hashlib.sha256(json.dumps(config["data"], sort_keys=True).encode()).hexdigest()
    return {"meridian/config-sha256": digest}


def _config_volume(config_map_name: str) -> dict[str, Any]:
    return {"name": "config", "configMap": {"name": config_map_name}}


_CONFIG_MOUNT = {"name": "config", "mountPath": _CONFIG_DIR, "readOnly": True}


def _deployment(name: str, component: str, replicas: int | None, template: dict[str, Any],
                region: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": selector(name)}, "template": template}
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(name, component, region),
            "spec": spec}


def control_plane_objects(topology: Topology, options: RenderOptions) -> list[dict[str, Any]]:
    ports = {"grpc": images.CONTROL_PLANE_GRPC_PORT, "admin": images.CONTROL_PLANE_ADMIN_PORT,
             "admin-grpc": images.CONTROL_PLANE_ADMIN_GRPC_PORT}
    config_name = f"{CONTROL_PLANE}-config"
    container = {
        "name": CONTROL_PLANE,
        "image": options.image,
        "args": ["control-plane", "--config", images.CONTROL_PLANE_CONFIG_PATH, "--replica-id", "$(POD_NAME)"],
        "env": [pod_name_env(), secret_env(ADMIN_TOKEN_ENV, ADMIN_SECRET, ADMIN_SECRET_KEY)],
        "ports": container_ports(ports),
        # /health answers while the process serves, leader or not and etcd reachable or not (it says which).
        "readinessProbe": http_probe("/health", "admin"),
        "livenessProbe": http_probe("/health", "admin", period_s=10, failures=6, initial_delay_s=10),
        "resources": resources("250m", "256Mi", "1", "512Mi"),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [_CONFIG_MOUNT],
    }
    config = _config_map_file(config_name, CONTROL_PLANE, "control-plane.yaml", control_plane_document(topology), [
        "Shared by the control-plane replicas; each one's --replica-id is its pod's name."])
    template = pod_template(CONTROL_PLANE, CONTROL_PLANE, [container],
                            annotations={**scrape_annotations(images.CONTROL_PLANE_ADMIN_PORT),
                                         **_config_annotation(config)},
                            volumes=[_config_volume(config_name)], affinity=spread_over_nodes(CONTROL_PLANE),
                            run_as_user=MERIDIAN_UID)
    return [
        config,
        service(CONTROL_PLANE, CONTROL_PLANE, ports),
        _deployment(CONTROL_PLANE, CONTROL_PLANE, CONTROL_PLANE_REPLICAS, template),
        # One replica keeps leading (or takes over within the lease TTL) while the other is drained.
        disruption_budget(CONTROL_PLANE, CONTROL_PLANE, min_available=1),
    ]


def router_objects(topology: Topology, region: str, options: RenderOptions) -> list[dict[str, Any]]:
    name = router_name(region)
    config_name = f"{name}-config"
    ports = {"http": images.ROUTER_PORT}
    # Every router may call every backend (remote ones when its region is saturated), so it holds every key.
    keys = sorted({b.api_key_env for _, b in topology.backends() if b.api_key_env})
    container = {
        "name": "router",
        "image": options.image,
        "args": ["router", "--config", images.ROUTER_CONFIG_PATH],
        "env": [secret_env(ADMIN_TOKEN_ENV, ADMIN_SECRET, ADMIN_SECRET_KEY),
                *(secret_env(key, BACKEND_KEYS_SECRET, key) for key in keys)],
        "ports": container_ports(ports),
        # /ready: a routing table with models (the config's until the control plane's arrives); /health: alive.
        "readinessProbe": http_probe("/ready", "http"),
        "livenessProbe": http_probe("/health", "http", period_s=10, failures=3, initial_delay_s=5),
        # One core: a router is one process (scale by pods). Memory: request bodies held at once (64 MiB by
        # default) cost up to ~280 MB more than an idle router (docs/benchmarks.md, big bodies).
        "resources": resources("500m", "256Mi", "1", "768Mi"),
        "securityContext": RESTRICTED_CONTAINER,
        # /tmp: `router --workers N` keeps its workers' files there, and the root filesystem is read-only.
        "volumeMounts": [_CONFIG_MOUNT, {"name": "state", "mountPath": images.STATE_DIR},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    config = _config_map_file(config_name, "router", "router.yaml", router_document(topology, region), [
        f"Shared by the routers of region {region}. Until the control plane's first table arrives, `models`",
        "is the routing table (version 0)."], region=region)
    template = pod_template(name, "router", [container], region=region,
                            annotations={**scrape_annotations(images.ROUTER_PORT), **_config_annotation(config)},
                            volumes=[_config_volume(config_name), {"name": "state", "emptyDir": {}},
                                     {"name": "tmp", "emptyDir": {}}],
                            affinity=spread_over_nodes(name), run_as_user=MERIDIAN_UID)
    return [
        config,
        service(name, "router", ports, region=region),
        # No replicas field: the HorizontalPodAutoscaler owns the count, and an apply must not reset it.
        _deployment(name, "router", None, template, region=region),
        {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(name, "router", region),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": ROUTER_MIN_REPLICAS,
                "maxReplicas": ROUTER_MAX_REPLICAS,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": ROUTER_TARGET_CPU_PERCENT}}}],
            },
        },
        disruption_budget(name, "router", region=region, max_unavailable=1),
    ]


def simulator_objects(region: str, backend: BackendSpec, options: RenderOptions) -> list[dict[str, Any]]:
    name = simulator_name(backend)
    ports = {"http": images.SIMULATOR_PORT}
    container = {
        "name": "simulator",
        "image": options.image,
        "args": simulator_argv(backend, host="0.0.0.0", port=images.SIMULATOR_PORT),
        "ports": container_ports(ports),
        "readinessProbe": http_probe("/health", "http"),
        "livenessProbe": http_probe("/health", "http", period_s=10, initial_delay_s=5),
        "resources": resources("250m", "128Mi", "1", "512Mi"),
        "securityContext": RESTRICTED_CONTAINER,
    }
    template = pod_template(name, "backend", [container], region=region,
                            annotations=scrape_annotations(images.SIMULATOR_PORT), run_as_user=MERIDIAN_UID)
    return [service(name, "backend", ports, region=region), _deployment(name, "backend", 1, template, region=region)]
