"""What both deployments run in their containers: images, ports, paths, and how etcd and Redis are started (as
`meridian up` starts them)."""

from __future__ import annotations

from regions.local_services import COMPACTION_RETENTION_S

MERIDIAN_IMAGE = "meridian:local"
"""What the repository's Dockerfile builds (`docker compose build` tags it)."""
ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
REDIS_IMAGE = "redis:7-alpine"
TOXIPROXY_IMAGE = "ghcr.io/shopify/toxiproxy:2.12.0"
CURL_IMAGE = "curlimages/curl:8.11.1"
PROMETHEUS_IMAGE = "prom/prometheus:v2.55.1"
GRAFANA_IMAGE = "grafana/grafana:11.3.1"
OLLAMA_IMAGE = "ollama/ollama:0.5.7"
VLLM_IMAGE = "vllm/vllm-openai:v0.6.6"

ROUTER_PORT = 8080
SIMULATOR_PORT = 9100
CONTROL_PLANE_GRPC_PORT = 50051
CONTROL_PLANE_ADMIN_PORT = 50052
CONTROL_PLANE_ADMIN_GRPC_PORT = 50053
ROUTER_CONFIG_PATH = "/etc/meridian/router.yaml"
CONTROL_PLANE_CONFIG_PATH = "/etc/meridian/control-plane.yaml"
STATE_DIR = "/var/lib/meridian/state"
"""Where a router keeps its last good table, so that a restart serves it (the image's home directory)."""
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
REDIS_PORT = 6379


def etcd_compaction_flags() -> list[str]:
    """Without compaction etcd keeps every revision and its db grows until NOSPACE stops all writes."""
    return ["--auto-compaction-mode=periodic", f"--auto-compaction-retention={int(COMPACTION_RETENTION_S)}s"]


# No snapshot and no append-only file, as the compose stack has always run Redis (telemetry is transient).
REDIS_COMMAND = ["redis-server", "--save", "", "--appendonly", "no"]
