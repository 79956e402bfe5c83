"""etcd (a 3-member StatefulSet behind its headless Service) and Redis, as the control plane and routers reach
them in the cluster."""

from __future__ import annotations

from typing import Any

from regions.deploy import images
from regions.deploy.k8s_objects import (
    RESTRICTED_CONTAINER,
    container_ports,
    disruption_budget,
    metadata,
    pod_name_env,
    pod_template,
    resources,
    selector,
    service,
    spread_over_nodes,
)
from regions.local_services import QUOTA_BACKEND_BYTES

ETCD = "etcd"
ETCD_MEMBERS = 3
ETCD_STORAGE = "1Gi"
REDIS = "redis"
STORE_UID = 10001
REDIS_UID = 999
"""The redis image's own `redis` user."""


def etcd_member_names() -> list[str]:
    return [f"{ETCD}-{index}" for index in range(ETCD_MEMBERS)]


def etcd_endpoints() -> list[str]:
    """Every member's client URL: a replica moves to the next one when the one it talks to is lost."""
    return [f"http://{member}.{ETCD}:{images.ETCD_CLIENT_PORT}" for member in etcd_member_names()]


def etcd_objects() -> list[dict[str, Any]]:
    ports = {"client": images.ETCD_CLIENT_PORT, "peer": images.ETCD_PEER_PORT}
    peer_port = images.ETCD_PEER_PORT
    initial_cluster = ",".join(f"{m}=http://{m}.{ETCD}:{peer_port}" for m in etcd_member_names())
    container = {
        "name": ETCD,
        "image": images.ETCD_IMAGE,
        "command": [
            "/usr/local/bin/etcd", "--name=$(POD_NAME)", "--data-dir=/var/lib/etcd",
            f"--listen-client-urls=http://0.0.0.0:{images.ETCD_CLIENT_PORT}",
            f"--advertise-client-urls=http://$(POD_NAME).{ETCD}:{images.ETCD_CLIENT_PORT}",
            f"--listen-peer-urls=http://0.0.0.0:{peer_port}",
            f"--initial-advertise-peer-urls=http://$(POD_NAME).{ETCD}:{peer_port}",
            # Read only on a member's first start; a restarted member rejoins from its data dir.
            f"--initial-cluster={initial_cluster}", "--initial-cluster-state=new",
            "--initial-cluster-token=meridian-etcd", f"--quota-backend-bytes={QUOTA_BACKEND_BYTES}",
            *images.etcd_compaction_flags(),
        ],
        "env": [pod_name_env()],
        "ports": container_ports(ports),
        # /health fails without quorum: a member that lost the others takes no client traffic.
        "readinessProbe": {"httpGet": {"path": "/health", "port": "client"}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": "client"}, "periodSeconds": 10, "timeoutSeconds": 2,
                          "failureThreshold": 6, "initialDelaySeconds": 10},
        "resources": resources("250m", "512Mi", "1", "1Gi"),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"}],
    }
    template = pod_template(ETCD, ETCD, [container], affinity=spread_over_nodes(ETCD), run_as_user=STORE_UID)
    stateful_set = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(ETCD, ETCD),
        "spec": {
            "serviceName": ETCD,
            "replicas": ETCD_MEMBERS,
            # All members start at once: none can become ready before a quorum has started.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector(ETCD)},
            "template": template,
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": ETCD_STORAGE}}},
            }],
        },
    }
    return [service(ETCD, ETCD, ports, headless=True), stateful_set,
            # Three members keep quorum with one down, so a drain may take one at a time.
            disruption_budget(ETCD, ETCD, max_unavailable=1)]


def redis_url() -> str:
    return f"redis://{REDIS}:{images.REDIS_PORT}/0"


def redis_objects() -> list[dict[str, Any]]:
    """One Redis: losing it costs telemetry and shared limits for a while, never routing (docs/deployment.md)."""
    ports = {"redis": images.REDIS_PORT}
    ping = {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5, "timeoutSeconds": 2,
            "failureThreshold": 3}
    container = {
        "name": REDIS,
        "image": images.REDIS_IMAGE,
        "command": images.REDIS_COMMAND,
        "ports": container_ports(ports),
        "readinessProbe": ping,
        "livenessProbe": {**ping, "initialDelaySeconds": 5},
        "resources": resources("250m", "256Mi", "1", "1Gi"),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    template = pod_template(REDIS, REDIS, [container], volumes=[{"name": "data", "emptyDir": {}}],
                            run_as_user=REDIS_UID)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(REDIS, REDIS),
        "spec": {"replicas": 1, "selector": {"matchLabels": selector(REDIS)}, "template": template},
    }
    return [service(REDIS, REDIS, ports), deployment]
