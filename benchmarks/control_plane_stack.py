"""A control plane with its routers, all real processes on 127.0.0.1: etcd, Redis, two simulators (one per
region), two control-plane replicas and routers in two regions. Used by `meridian bench propagation`,
`meridian bench failover` and the routers-with-control-plane tests."""

from __future__ import annotations

import json
import random
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from meridian_common.service_process import ServiceProcess, start_service
from meridian_common.workload import TINY, chat_body, median_shape
from regions.local_services import RunningService, start_etcd, start_redis

MODEL = "llama"
REGIONS = ("eu-west", "us-east")
TOKEN_ENV = "MERIDIAN_ADMIN_TOKEN"
T = TypeVar("T")
# Tiny answers on purpose: what the failover bench and the tests of this stack measure is the control plane (a
# table's propagation, a leader's replacement) and whether routers keep answering meanwhile. The simulators
# here have no inter-token latency, so a long answer would add bytes, not time, and say nothing more.
CHAT_SHAPE = median_shape(TINY, stream=False)
_CHAT_BODY = chat_body(MODEL, CHAT_SHAPE, random.Random(0))


def meridian(*args: str) -> list[str]:
    return [sys.executable, "-m", "meridian_cli.main", *args]


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout_s: float = 5.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for(predicate: Callable[[], T | None], what: str, timeout_s: float = 10.0, interval_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval_s)
    raise TimeoutError(f"not within {timeout_s} s: {what}")


def chat(router_url: str) -> int:
    try:
        return http_json("POST", f"{router_url}/v1/chat/completions", _CHAT_BODY)[0]
    except (urllib.error.URLError, OSError):
        return 0


def _deployment(name: str, url: str, region: str, cost: float) -> dict[str, Any]:
    return {"name": name, "url": f"{url}/v1", "served_model": "m", "region": region, "cost_per_1m_input": cost,
            "cost_per_1m_output": cost}


@dataclass
class ControlPlaneStack:
    workdir: Path
    lease_ttl_s: float = 2.0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    etcd: RunningService | None = None
    redis: RunningService | None = None
    sims: dict[str, ServiceProcess] = field(default_factory=dict)
    replicas: dict[str, ServiceProcess] = field(default_factory=dict)
    routers: dict[str, ServiceProcess] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)

    def deployments(self) -> list[dict[str, Any]]:
        return [_deployment(f"sim-{region}", self.sims[region].url, region, 0.5 if region == REGIONS[0] else 0.2)
                for region in REGIONS]

    def catalog(self) -> dict[str, Any]:
        assert self.etcd is not None and self.redis is not None
        return {
            "etcd": {"endpoints": [self.etcd.url], "prefix": "/meridian"},
            "redis_url": self.redis.url,
            "grpc": {"host": "127.0.0.1", "port": 0},
            "admin": {"host": "127.0.0.1", "port": 0, "grpc_port": 0, "token_env": TOKEN_ENV},
            "lease_ttl_s": self.lease_ttl_s, "tick_s": 0.2, "telemetry_window_s": 3,
            "regions": {REGIONS[0]: {"rtt_ms": {REGIONS[1]: 80}}, REGIONS[1]: {}},
            "models": {MODEL: {"policy": "latency-first", "deployments": self.deployments()}},
        }

    def start_infrastructure(self) -> None:
        self.etcd = start_etcd(self.workdir / "etcd", self.workdir / "etcd.log")
        self.redis = start_redis(self.workdir / "redis", self.workdir / "redis.log")
        for region in REGIONS:
            self.sims[region] = start_service(f"sim-{region}", meridian(
                "sim-backend", "--port", "0", "--model", "m", "--ttft-ms", "2", "--itl-ms", "0", "--capacity", "512"),
                self.workdir)

    def start_replica(self, name: str) -> ServiceProcess:
        config = self.workdir / "control-plane.yaml"
        config.write_text(yaml.safe_dump(self.catalog()))
        replica = start_service(name, meridian("control-plane", "--config", str(config), "--replica-id", name),
                                self.workdir, env={TOKEN_ENV: self.token})
        self.replicas[name] = replica
        return replica

    def router_config(self, name: str, region: str) -> Path:
        assert self.redis is not None
        home = next(d for d in self.deployments() if d["region"] == region)
        document = {"region": region, "router_id": name, "redis_url": self.redis.url,
                    "state_dir": str(self.workdir / "state" / name), "telemetry": {"interval_s": 0.2},
                    "models": {MODEL: {"policy": "latency-first", "deployments": [home]}},
                    "control_plane": {"targets": self.targets}}
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    def start_router(self, name: str, region: str) -> ServiceProcess:
        router = start_service(name, meridian("router", "--config", str(self.router_config(name, region)),
                                              "--port", "0"), self.workdir, health_path="/ready")
        self.routers[name] = router
        return router

    def start(self, routers_per_region: int = 1) -> None:
        self.start_infrastructure()
        for name in ("cp-a", "cp-b"):
            self.start_replica(name)
        wait_for(self.leader, "a leader")
        self.targets = [self.health(r)["grpc"] for r in self.replicas.values()]
        for region in REGIONS:
            for index in range(routers_per_region):
                self.start_router(f"router-{region}-{index + 1}", region)
        wait_for(lambda: all(self.routing(r)["table"]["source"] == "control-plane" for r in self.routers.values()),
                 "every router to apply a control-plane table")

    def stop(self) -> None:
        for service in [*self.routers.values(), *self.replicas.values(), *self.sims.values()]:
            service.stop()
        for running in (self.redis, self.etcd):
            if running is not None:
                running.stop()

    def health(self, replica: ServiceProcess) -> dict[str, Any]:
        return dict(http_json("GET", f"{replica.url}/health")[1])

    def routing(self, router: ServiceProcess) -> dict[str, Any]:
        return dict(http_json("GET", f"{router.url}/routing")[1])

    def leader(self) -> str | None:
        for name, replica in self.replicas.items():
            if replica.alive() and self.health(replica).get("role") == "leader":
                return name
        return None

    def admin_url(self) -> str:
        return next(r.url for r in self.replicas.values() if r.alive())
