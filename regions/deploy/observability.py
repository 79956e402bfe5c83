"""What watches the stack: Prometheus's scrape config of the compose stack, Grafana's provisioning, and the
Grafana dashboard (kept in this package, so that an installed `meridian` renders it too)."""

from __future__ import annotations

from importlib import resources
from typing import Any

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
    ROUTER_PORT,
    SIMULATOR_PORT,
)
from regions.launcher import CONTROL_PLANE_REPLICAS
from regions.stack_config import host_port

DATASOURCE_UID = "meridian-prometheus"
"""The dashboard's panels name their datasource by this uid."""
SCRAPE_INTERVAL = "5s"
GRAFANA_DASHBOARDS_DIR = "/var/lib/grafana/dashboards"
DASHBOARD_FILE = "meridian.json"


def dashboard_text() -> str:
    return resources.files(__package__).joinpath("grafana_dashboard.json").read_text()


def prometheus_document(plan: ComposePlan) -> dict[str, Any]:
    """deploy/prometheus.yml: every router, replica (admin HTTP port), backend and Toxiproxy, by service name."""
    backend_groups = []
    for region in plan.regions:
        targets = [f"{simulator_service(b)}:{SIMULATOR_PORT}" if b.simulated else host_port(str(b.url))
                   for b in plan.topology.regions[region].backends]
        if targets:
            backend_groups.append({"targets": targets, "labels": {"backend_region": region}})
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            _job("meridian-router", [{"targets": [f"{router_service(r)}:{ROUTER_PORT}" for r in plan.regions]}]),
            _job("meridian-control-plane", [{"targets": [f"{control_plane_service(r)}:{CONTROL_PLANE_ADMIN_PORT}"
                                                         for r in CONTROL_PLANE_REPLICAS]}]),
            # vLLM's metric names: each simulator exports them as a real vLLM does (docs/simulator.md).
            _job("backend", backend_groups),
            _job("toxiproxy", [{"targets": [f"{TOXIPROXY}:{TOXIPROXY_API_PORT}"]}]),
            {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]},
        ],
    }


def _job(name: str, static_configs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"job_name": name, "metrics_path": "/metrics", "static_configs": static_configs}


def grafana_datasources_document(prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [{
            "name": "Prometheus", "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy",
            "url": prometheus_url, "isDefault": True, "editable": False,
            # The scrape interval, so that $__rate_interval fits it.
            "jsonData": {"timeInterval": SCRAPE_INTERVAL},
        }],
    }


def grafana_dashboards_document() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "meridian", "orgId": 1, "folder": "Meridian", "type": "file", "disableDeletion": True,
            "allowUiUpdates": False, "updateIntervalSeconds": 30,
            "options": {"path": GRAFANA_DASHBOARDS_DIR, "foldersFromFilesStructure": False},
        }],
    }
