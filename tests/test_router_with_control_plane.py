"""Routers and the control plane together, all real processes: tables flow to routers and are ACKed, a
policy push reaches them, killing the leader costs no client error, a router restarted with the control
plane down serves its persisted table, and telemetry resumes after Redis restarts."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from meridian_common.service_process import ServiceProcess, start_service
from regions.local_services import RunningService, start_etcd, start_redis

pytestmark = pytest.mark.integration

TOKEN = "router-cp-test-token"
TOKEN_ENV = "MERIDIAN_TEST_ADMIN_TOKEN"
MODEL = "llama"
LEASE_TTL_S = 2


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "meridian_cli.main", *args]


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _wait_for(predicate: Any, what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def _deployment(name: str, url: str, region: str, cost: float) -> dict[str, Any]:
    return {"name": name, "url": f"{url}/v1", "served_model": "m", "region": region, "cost_per_1m_input": cost,
            "cost_per_1m_output": cost}


@dataclass
class Stack:
    workdir: Path
    etcd: RunningService
    redis: RunningService
    sims: dict[str, ServiceProcess]
    replicas: dict[str, ServiceProcess] = field(default_factory=dict)
    router: ServiceProcess | None = None
    targets: list[str] = field(default_factory=list)

    def catalog(self) -> dict[str, Any]:
        return {
            "etcd": {"endpoints": [self.etcd.url], "prefix": "/meridian-it"},
            "redis_url": self.redis.url,
            "grpc": {"host": "127.0.0.1", "port": 0},
            "admin": {"host": "127.0.0.1", "port": 0, "grpc_port": 0, "token_env": TOKEN_ENV},
            "lease_ttl_s": LEASE_TTL_S, "tick_s": 0.2, "telemetry_window_s": 3,
            "regions": {"eu-west": {"rtt_ms": {"us-east": 80}}, "us-east": {}},
            "models": {MODEL: {"policy": "latency-first", "deployments": [
                _deployment("sim-eu", self.sims["sim-eu"].url, "eu-west", 0.5),
                _deployment("sim-us", self.sims["sim-us"].url, "us-east", 0.2)]}},
        }

    def start_replica(self, name: str) -> ServiceProcess:
        config = self.workdir / "control-plane.yaml"
        config.write_text(yaml.safe_dump(self.catalog()))
        replica = start_service(name, _cli("control-plane", "--config", str(config), "--replica-id", name),
                                self.workdir, env={TOKEN_ENV: TOKEN})
        self.replicas[name] = replica
        return replica

    def grpc_targets(self) -> list[str]:
        return [_http("GET", f"{r.url}/health")[1]["grpc"] for r in self.replicas.values()]

    def router_config(self, targets: list[str]) -> Path:
        models = {MODEL: {"policy": "latency-first", "deployments": [
            {**_deployment("sim-eu", self.sims["sim-eu"].url, "eu-west", 0.5), "architecture": "dense"}]}}
        document = {"region": "eu-west", "router_id": "router-eu-1", "redis_url": self.redis.url,
                    "state_dir": str(self.workdir / "router-state"), "models": models,
                    "control_plane": {"targets": targets}, "telemetry": {"interval_s": 0.2}}
        path = self.workdir / "router.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    def start_router(self, targets: list[str]) -> ServiceProcess:
        self.targets = targets
        self.router = start_service("router", _cli("router", "--config", str(self.router_config(targets)),
                                                   "--port", "0"), self.workdir, health_path="/ready")
        return self.router

    def routing(self) -> dict[str, Any]:
        assert self.router is not None
        return _http("GET", f"{self.router.url}/routing")[1]

    def leader(self) -> str | None:
        for name, replica in self.replicas.items():
            if replica.alive() and _http("GET", f"{replica.url}/health")[1].get("role") == "leader":
                return name
        return None

    def admin(self) -> str:
        return next(r.url for r in self.replicas.values() if r.alive())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("router-cp")
    etcd = start_etcd(workdir / "etcd", workdir / "etcd.log")
    redis_service = start_redis(workdir / "redis", workdir / "redis.log")
    sims: dict[str, ServiceProcess] = {}
    stack = Stack(workdir, etcd, redis_service, sims)
    try:
        for name, ttft in (("sim-eu", "2"), ("sim-us", "5")):
            sims[name] = start_service(name, _cli("sim-backend", "--port", "0", "--model", "m", "--ttft-ms", ttft,
                                                  "--itl-ms", "0"), workdir)
        stack.start_replica("cp-a")
        stack.start_replica("cp-b")
        _wait_for(stack.leader, "a leader")
        stack.start_router(stack.grpc_targets())
        yield stack
    finally:
        for service in [*([stack.router] if stack.router else []), *stack.replicas.values(), *sims.values()]:
            service.stop()
        stack.redis.stop()
        etcd.stop()


def _chat(router: ServiceProcess) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return _http("POST", f"{router.url}/v1/chat/completions", body)[0]


def test_router_applies_and_acks_the_control_plane_table(stack: Stack) -> None:
    table = _wait_for(lambda: (t := stack.routing()["table"])["source"] == "control-plane" and t,
                      "the router to apply a control-plane table")
    assert table["version"] > 0 and table["epoch"] > 0
    routing = stack.routing()
    assert {d["name"] for d in routing["models"][MODEL]["deployments"]} == {"sim-eu", "sim-us"}
    remote = next(d for d in routing["models"][MODEL]["deployments"] if d["name"] == "sim-us")
    assert remote["added_latency_ms"] == 80
    assert routing["control_plane"]["link"] == "connected"

    def acked() -> Any:
        status = _http("GET", f"{stack.admin()}/v1/status", token=TOKEN)[1]
        routers = [r for r in status["routers"] if r["region"] == "eu-west"]
        return routers and routers[0]["version"] == table["version"] and status
    status = _wait_for(acked, "status to show the router's ACK")
    assert status["leader"]["epoch"] > 0 and len(status["replicas"]) == 2
    assert _chat(stack.router) == 200


def test_policy_push_reaches_the_router(stack: Stack) -> None:
    before = stack.routing()["table"]["version"]
    status, reply = _http("POST", f"{stack.admin()}/v1/policy/set",
                          {"region": "eu-west", "model": MODEL, "policy": "cost-first", "latency_budget_ms": 800},
                          token=TOKEN)
    assert status == 200, reply
    routing = _wait_for(lambda: (r := stack.routing())["models"][MODEL]["policy"] == "cost-first" and r,
                        "the pushed policy to reach the router", timeout_s=5)
    assert routing["table"]["version"] > before
    assert routing["models"][MODEL]["latency_budget_ms"] == 800
    refused = _http("POST", f"{stack.admin()}/v1/policy/set", {"region": "eu-west", "model": MODEL,
                                                              "policy": "fastest"}, token=TOKEN)
    assert refused[0] == 400
    assert stack.routing()["models"][MODEL]["policy"] == "cost-first"


def test_telemetry_reaches_redis(stack: Stack) -> None:
    for _ in range(5):
        assert _chat(stack.router) == 200
    client = redis.Redis.from_url(stack.redis.url)
    _wait_for(lambda: client.xlen("meridian:telemetry:eu-west") > 0, "telemetry in Redis")
    assert stack.routing()["telemetry"]["connected"] is True


def test_leader_kill_costs_no_client_error(stack: Stack) -> None:
    router = stack.router
    assert router is not None
    old_leader = _wait_for(stack.leader, "a leader")
    epoch_before = stack.routing()["table"]["epoch"]
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline and len(statuses) < 5000:
            statuses.append(_chat(router))

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(0.3)
        killed_at = time.monotonic()
        stack.replicas[old_leader].kill()
        _wait_for(lambda: stack.routing()["table"]["epoch"] > epoch_before,
                  "a table of the new leader's epoch at the router", timeout_s=LEASE_TTL_S + 4)
        failover_s = time.monotonic() - killed_at
        time.sleep(0.3)
    finally:
        stop.set()
        sender.join()
    assert stack.leader() not in (None, old_leader)
    assert failover_s <= LEASE_TTL_S + 1.5, failover_s
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))


def test_router_restarted_with_control_plane_down_serves_its_persisted_table(stack: Stack) -> None:
    version = stack.routing()["table"]["version"]
    for replica in stack.replicas.values():
        replica.stop()
    assert stack.router is not None
    stack.router.stop()
    stack.start_router(stack.targets)
    routing = stack.routing()
    assert routing["table"]["source"] == "disk" and routing["table"]["version"] == version
    assert routing["models"][MODEL]["policy"] == "cost-first"
    assert _http("GET", f"{stack.router.url}/ready")[0] == 200
    assert all(_chat(stack.router) == 200 for _ in range(5))


def test_telemetry_resumes_after_redis_restarts(stack: Stack) -> None:
    router = stack.router
    assert router is not None
    port = stack.redis.port
    stack.redis.kill()
    for _ in range(3):
        assert _chat(router) == 200
    _wait_for(lambda: stack.routing()["telemetry"]["connected"] is False, "the publisher to notice")
    stack.redis = start_redis(stack.workdir / "redis-again", stack.workdir / "redis-again.log", port=port)
    restarted_at = time.monotonic()
    for _ in range(3):
        assert _chat(router) == 200
    _wait_for(lambda: stack.routing()["telemetry"]["connected"] is True, "telemetry to resume", timeout_s=5)
    assert time.monotonic() - restarted_at < 3
    client = redis.Redis.from_url(stack.redis.url)
    _wait_for(lambda: client.xlen("meridian:telemetry:eu-west") > 0, "new samples in the restarted Redis")
