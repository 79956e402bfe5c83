"""Builders of the Kubernetes objects every component uses (metadata and labels, Services, ConfigMaps,
disruption budgets, probes, resources), as plain dicts in the API's own field names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

NAMESPACE = "meridian"
PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
NAME = "app.kubernetes.io/name"
REGION = "meridian/region"
ADMIN_SECRET = "meridian-admin"
"""Created by the operator (docs/deployment.md), never rendered: key `token`, the admin API's bearer token."""
ADMIN_SECRET_KEY = "token"
BACKEND_KEYS_SECRET = "meridian-backend-keys"
"""Created by the operator when backends take keys: one key per `api_key_env` of the topology."""


def labels(name: str, component: str, region: str | None = None) -> dict[str, str]:
    found = {PART_OF: "meridian", COMPONENT: component, NAME: name}
    if region is not None:
        found[REGION] = region
    return found


def selector(name: str) -> dict[str, str]:
    """What a workload's pods are found by: stable across renders, so that a Deployment's selector never changes."""
    return {PART_OF: "meridian", NAME: name}


def component_selector(component: str, region: str | None = None) -> dict[str, Any]:
    match = {PART_OF: "meridian", COMPONENT: component}
    if region is not None:
        match[REGION] = region
    return {"matchLabels": match}


def metadata(name: str, component: str, region: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": labels(name, component, region), **extra}


def service(name: str, component: str, ports: Mapping[str, int], *, region: str | None = None,
            headless: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector(name),
                            "ports": [{"name": port_name, "port": port, "targetPort": port_name}
                                      for port_name, port in ports.items()]}
    if headless:
        # Members find each other by their own names before any of them is ready (etcd's bootstrap needs that).
        spec.update(clusterIP="None", publishNotReadyAddresses=True)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(name, component, region), "spec": spec}


def config_map(name: str, component: str, data: Mapping[str, str], *, region: str | None = None,
               extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta = metadata(name, component, region)
    meta["labels"].update(extra_labels or {})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}


def disruption_budget(name: str, component: str, *, region: str | None = None, min_available: int | None = None,
                      max_unavailable: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": selector(name)}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(name, component, region),
            "spec": spec}


def http_probe(path: str, port: str, *, period_s: int = 5, failures: int = 3, initial_delay_s: int = 0
               ) -> dict[str, Any]:
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": port}, "periodSeconds": period_s,
                             "timeoutSeconds": 2, "failureThreshold": failures}
    if initial_delay_s:
        probe["initialDelaySeconds"] = initial_delay_s
    return probe


def resources(request_cpu: str, request_memory: str, limit_cpu: str, limit_memory: str) -> dict[str, Any]:
    return {"requests": {"cpu": request_cpu, "memory": request_memory},
            "limits": {"cpu": limit_cpu, "memory": limit_memory}}


def container_ports(ports: Mapping[str, int]) -> list[dict[str, Any]]:
    return [{"name": name, "containerPort": port} for name, port in ports.items()]


def secret_env(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def pod_name_env() -> dict[str, Any]:
    return {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def spread_over_nodes(name: str) -> dict[str, Any]:
    """Preferred, not required: a one-node cluster still schedules every replica."""
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {"labelSelector": {"matchLabels": selector(name)}, "topologyKey": "kubernetes.io/hostname"},
    }]}}


def scrape_annotations(port: int) -> dict[str, str]:
    """The annotations a Prometheus with the common kubernetes-pods scrape job reads."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


RESTRICTED_POD: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER: dict[str, Any] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}


def pod_template(name: str, component: str, containers: Sequence[dict[str, Any]], *, region: str | None = None,
                 annotations: Mapping[str, str] | None = None, volumes: Sequence[dict[str, Any]] = (),
                 affinity: dict[str, Any] | None = None, run_as_user: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels(name, component, region)}
    if annotations:
        meta["annotations"] = dict(annotations)
    security = dict(RESTRICTED_POD)
    if run_as_user is not None:
        security.update(runAsUser=run_as_user, runAsGroup=run_as_user, fsGroup=run_as_user)
    spec: dict[str, Any] = {"securityContext": security, "containers": list(containers)}
    if volumes:
        spec["volumes"] = list(volumes)
    if affinity:
        spec["affinity"] = affinity
    return {"metadata": meta, "spec": spec}
