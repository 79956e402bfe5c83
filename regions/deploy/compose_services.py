"""The services of docker-compose.yml for a compose plan: shared stores, Toxiproxy, the control-plane replicas,
each region's router and simulators, Prometheus and Grafana, and the real model servers behind profiles."""

from __future__ import annotations

from typing import Any

from regions.deploy import images
from regions.deploy.compose_wiring import (
    TOXIPROXY,
    TOXIPROXY_API_PORT,
    ComposePlan,
    control_plane_service,
    router_service,
    simulator_service,
)
from regions.deploy.images import (
    CONTROL_PLANE_ADMIN_PORT,
    CONTROL_PLANE_CONFIG_PATH,
    ROUTER_CONFIG_PATH,
    ROUTER_PORT,
    SIMULATOR_PORT,
)
from regions.deploy.observability import DASHBOARD_FILE, GRAFANA_DASHBOARDS_DIR
from regions.launcher import CONTROL_PLANE_REPLICAS
from regions.stack_config import ADMIN_TOKEN_ENV, simulator_argv

# No default: a token everyone knows would open the admin API (policies) and the routers' /cache endpoints.
ADMIN_TOKEN = f"${{{ADMIN_TOKEN_ENV}:?set {ADMIN_TOKEN_ENV}, in the environment or in .env, to a secret of your own}}"
GRAFANA_PASSWORD = ("${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD, in the environment or in .env, "
                    "to a password of your own}")
ROUTER_WORKERS = "${MERIDIAN_ROUTER_WORKERS:-1}"
VOLUMES = ("etcd-data", "prometheus-data", "grafana-data", "ollama-models", "huggingface-cache")


def _meridian(image: str) -> dict[str, Any]:
    """The repository's Dockerfile, built and tagged `image` by `docker compose build`."""
    return {"build": ".", "image": image, "restart": "unless-stopped"}


def _healthcheck(test: list[str], *, start_period: str | None = None) -> dict[str, Any]:
    check: dict[str, Any] = {"test": test, "interval": "5s", "timeout": "3s", "retries": 10}
    if start_period:
        check["start_period"] = start_period
    return check


def _http_healthcheck(port: int, path: str) -> dict[str, Any]:
    """The Meridian image has Python and no curl."""
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=2)"
    return _healthcheck(["CMD", "python", "-c", probe], start_period="10s")


def _healthy(*names: str) -> dict[str, Any]:
    return {name: {"condition": "service_healthy"} for name in names}


def compose_document(plan: ComposePlan, image: str) -> dict[str, Any]:
    services: dict[str, Any] = {
        "etcd": _etcd(), "redis": _redis(), TOXIPROXY: _toxiproxy(), "toxiproxy-latency": _toxiproxy_latency(),
    }
    for replica in CONTROL_PLANE_REPLICAS:
        services[control_plane_service(replica)] = _control_plane(plan, replica, image)
    for region in plan.regions:
        services[router_service(region)] = _router(plan, region, image)
        for home, backend in plan.simulated:
            if home == region:
                services[simulator_service(backend)] = {
                    **_meridian(image),
                    "command": simulator_argv(backend, host="0.0.0.0", port=SIMULATOR_PORT),
                    "ports": [f"127.0.0.1:{plan.simulator_host_port(backend)}:{SIMULATOR_PORT}"],
                    "healthcheck": _http_healthcheck(SIMULATOR_PORT, "/health"),
                }
    services.update(prometheus=_prometheus(), grafana=_grafana(), ollama=_ollama(), vllm=_vllm())
    return {"name": "meridian", "services": services, "volumes": {name: None for name in VOLUMES}}


def _etcd() -> dict[str, Any]:
    client, peer = images.ETCD_CLIENT_PORT, images.ETCD_PEER_PORT
    return {
        "image": images.ETCD_IMAGE,
        "command": ["/usr/local/bin/etcd", "--name=etcd", "--data-dir=/etcd-data",
                    f"--listen-client-urls=http://0.0.0.0:{client}", f"--advertise-client-urls=http://etcd:{client}",
                    f"--listen-peer-urls=http://0.0.0.0:{peer}", f"--initial-advertise-peer-urls=http://etcd:{peer}",
                    f"--initial-cluster=etcd=http://etcd:{peer}", *images.etcd_compaction_flags()],
        "volumes": ["etcd-data:/etcd-data"],
        "healthcheck": _healthcheck(["CMD", "/usr/local/bin/etcdctl", f"--endpoints=http://127.0.0.1:{client}",
                                     "endpoint", "health"]),
        "restart": "unless-stopped",
    }


def _redis() -> dict[str, Any]:
    return {"image": images.REDIS_IMAGE, "command": images.REDIS_COMMAND,
            "healthcheck": _healthcheck(["CMD", "redis-cli", "ping"]), "restart": "unless-stopped"}


def _toxiproxy() -> dict[str, Any]:
    return {
        "image": images.TOXIPROXY_IMAGE,
        # The image's CMD is -host=0.0.0.0; with -config and no -host the API would listen on localhost only.
        "command": ["-host=0.0.0.0", f"-port={TOXIPROXY_API_PORT}", "-config=/config/toxiproxy.json",
                    "-proxy-metrics"],
        "volumes": ["./deploy/toxiproxy.json:/config/toxiproxy.json:ro"],
        "ports": [f"127.0.0.1:{TOXIPROXY_API_PORT}:{TOXIPROXY_API_PORT}"],
        "healthcheck": _healthcheck(["CMD", "/toxiproxy-cli", "list"]),
        "restart": "unless-stopped",
    }


def _toxiproxy_latency() -> dict[str, Any]:
    """One-shot: the cross-region proxies get their region pair's RTT as latency toxics."""
    return {
        "image": images.CURL_IMAGE,
        "entrypoint": ["/bin/sh", "/deploy/toxiproxy-latency.sh"],
        "environment": {"TOXIPROXY_URL": f"http://{TOXIPROXY}:{TOXIPROXY_API_PORT}"},
        "volumes": ["./deploy/toxiproxy-latency.sh:/deploy/toxiproxy-latency.sh:ro"],
        "depends_on": _healthy(TOXIPROXY),
        "restart": "no",
    }


def _control_plane(plan: ComposePlan, replica: str, image: str) -> dict[str, Any]:
    return {
        **_meridian(image),
        "command": ["control-plane", "--config", CONTROL_PLANE_CONFIG_PATH, "--replica-id", replica],
        "environment": {ADMIN_TOKEN_ENV: ADMIN_TOKEN},
        "volumes": [f"./deploy/control-plane.yaml:{CONTROL_PLANE_CONFIG_PATH}:ro"],
        # Admin HTTP: meridian policy / status, /health, /metrics.
        "ports": [f"127.0.0.1:{plan.replica_admin_host_port(replica)}:{CONTROL_PLANE_ADMIN_PORT}"],
        "healthcheck": _http_healthcheck(CONTROL_PLANE_ADMIN_PORT, "/health"),
        "depends_on": _healthy("etcd", "redis", TOXIPROXY),
    }


def _router(plan: ComposePlan, region: str, image: str) -> dict[str, Any]:
    # Every router may call every backend (remote ones when its own region is saturated), so it holds every key.
    backend_keys = sorted({b.api_key_env for _, b in plan.topology.backends() if b.api_key_env})
    environment = {ADMIN_TOKEN_ENV: ADMIN_TOKEN}
    environment.update({name: f"${{{name}:?set {name}, a backend's key}}" for name in backend_keys})
    return {
        **_meridian(image),
        "command": ["router", "--config", ROUTER_CONFIG_PATH, "--workers", ROUTER_WORKERS],
        "environment": environment,
        "volumes": [f"./deploy/routers/{region}.yaml:{ROUTER_CONFIG_PATH}:ro"],
        "ports": [f"127.0.0.1:{plan.router_host_port(region)}:{ROUTER_PORT}"],
        "healthcheck": _http_healthcheck(ROUTER_PORT, "/ready"),
        "depends_on": {**_healthy(TOXIPROXY),
                       **{simulator_service(b): {"condition": "service_started"}
                          for home, b in plan.simulated if home == region}},
    }


def _prometheus() -> dict[str, Any]:
    return {
        "image": images.PROMETHEUS_IMAGE,
        "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                    "--storage.tsdb.retention.time=2d",
                    "--web.enable-lifecycle"],  # POST /-/reload after re-rendering deploy/prometheus.yml
        "volumes": ["./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro", "prometheus-data:/prometheus"],
        "ports": ["127.0.0.1:9090:9090"],
        "restart": "unless-stopped",
    }


def _grafana() -> dict[str, Any]:
    return {
        "image": images.GRAFANA_IMAGE,
        "environment": {
            "GF_SECURITY_ADMIN_PASSWORD": GRAFANA_PASSWORD,
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": f"{GRAFANA_DASHBOARDS_DIR}/{DASHBOARD_FILE}",
        },
        "volumes": ["./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
                    f"./deploy/grafana/dashboards:{GRAFANA_DASHBOARDS_DIR}:ro", "grafana-data:/var/lib/grafana"],
        "ports": ["127.0.0.1:3000:3000"],
        "depends_on": ["prometheus"],
        "restart": "unless-stopped",
    }


def _ollama() -> dict[str, Any]:
    """Started only with `--profile ollama`; a topology backend with url http://ollama:11434/v1 uses it."""
    return {
        "image": images.OLLAMA_IMAGE,
        "profiles": ["ollama"],
        "volumes": ["ollama-models:/root/.ollama"],
        "ports": ["127.0.0.1:11434:11434"],
        "restart": "unless-stopped",
    }


def _vllm() -> dict[str, Any]:
    """Started only with `--profile vllm`: it needs an NVIDIA GPU and the NVIDIA container toolkit."""
    return {
        "image": images.VLLM_IMAGE,
        "profiles": ["vllm"],
        "command": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "8192"],
        "environment": {"HF_TOKEN": "${HF_TOKEN:-}"},  # for gated models
        "volumes": ["huggingface-cache:/root/.cache/huggingface"],
        "ipc": "host",
        "deploy": {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}}},
        "restart": "unless-stopped",
    }
