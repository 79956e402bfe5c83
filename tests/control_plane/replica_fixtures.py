"""Shared by the replica and admin tests: a small catalog config, replicas as child processes, a table
subscriber, and a bounded wait."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data_plane.table.subscriber import Backoff, TableSubscriber
from meridian_common.service_process import ServiceProcess, start_service
from meridian_proto import routing_pb2

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-admin-token-" + uuid.uuid4().hex[:8]
TOKEN_ENV = "MERIDIAN_TEST_ADMIN_TOKEN"
LLAMA = "llama-3.3-70b"
LEASE_TTL_S = 2


def config_document(etcd_url: str, redis_url: str, prefix: str, **overrides: Any) -> dict[str, Any]:
    def deployment(name: str, port: int, region: str, cost: float) -> dict[str, Any]:
        return {"name": name, "url": f"http://127.0.0.1:{port}/v1", "served_model": "m", "region": region,
                "cost_per_1m_input": cost}

    return {
        "etcd": {"endpoints": [etcd_url], "prefix": prefix},
        "redis_url": redis_url,
        "grpc": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0, "grpc_port": 0, "token_env": TOKEN_ENV},
        "lease_ttl_s": LEASE_TTL_S,
        "tick_s": 0.2,
        "telemetry_window_s": 2,
        "regions": {"eu-west": {"rtt_ms": {"us-east": 80}}, "us-east": {}},
        "models": {
            LLAMA: {
                "policy": "latency-first",
                "deployments": [deployment("vllm-eu", 9100, "eu-west", 0.6),
                                deployment("vllm-us", 9200, "us-east", 0.5)],
            },
        },
        **overrides,
    }


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def new_prefix() -> str:
    return f"/meridian-test/{uuid.uuid4().hex[:10]}"


def start_replica(name: str, config_path: Path, workdir: Path) -> ServiceProcess:
    argv = [sys.executable, "-m", "meridian_cli.main", "control-plane", "--config", str(config_path),
            "--replica-id", name]
    return start_service(name, argv, workdir, health_path="/health", timeout_s=20.0,
                         env={TOKEN_ENV: TOKEN, "PYTHONPATH": str(ROOT)})


def http(method: str, url: str, body: Any = None, *, token: str | None = TOKEN,
         content_type: str = "application/json") -> tuple[int, Any]:
    """A blocking request (tests only, outside any event loop)."""
    data = None
    if body is not None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def health(service: ServiceProcess) -> dict[str, Any]:
    return http("GET", service.url + "/health", token=None)[1]


async def wait_async(predicate: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout_s}s: {what}")


@dataclass(slots=True)
class RecordingRouter:
    """What a router wires into its subscriber: tables applied, in order, with the time they arrived."""

    tables: list[routing_pb2.RoutingTable]
    arrived_at: list[float]

    @classmethod
    def empty(cls) -> RecordingRouter:
        return cls([], [])

    def apply(self, table: routing_pb2.RoutingTable) -> None:
        self.tables.append(table)
        self.arrived_at.append(time.monotonic())

    @property
    def versions(self) -> list[int]:
        return [t.version for t in self.tables]

    def route(self, model: str = LLAMA) -> routing_pb2.ModelRoute | None:
        if not self.tables:
            return None
        return next((m for m in self.tables[-1].models if m.model == model), None)


def subscriber(targets: list[str], router: RecordingRouter, region: str = "eu-west",
               router_id: str = "router-test") -> TableSubscriber:
    return TableSubscriber(targets, router_id=router_id, region=region, url=f"http://{router_id}:8080",
                           initial=routing_pb2.RoutingTable(region=region), validate=lambda _t: None,
                           apply=router.apply, backoff=Backoff(initial_s=0.02, max_s=0.2), connect_timeout_s=2.0)
