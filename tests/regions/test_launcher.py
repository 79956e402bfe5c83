"""`meridian up --detach` / `meridian down` on the two-region topology, end to end with real processes: the stack
file, every part healthy, routers of two workers each, /v1/regions, a cross-region call slowed by the RTT proxy,
refusal of a second stack, and nothing left running after down (workers included). Routers without workers are
started by every other stack test."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regions.stack_file import ProcessRecord, processes, read_stack
from regions.topology import DEFAULT_TOPOLOGY, load_topology

pytestmark = pytest.mark.integration

TOPOLOGY = DEFAULT_TOPOLOGY.parent / "topology-two-regions.yaml"
RTT_MS = load_topology(TOPOLOGY).rtt_ms("us-east", "eu-west")
TOLERANCE = 0.9
WORKERS = 2


def _meridian(cwd: Path, *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meridian_cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout_s, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _get(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        assert response.status == 200, url
        return json.loads(response.read() or b"null")


def _chat(router: str, policy: str) -> tuple[str, float]:
    body = json.dumps({"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    request = urllib.request.Request(f"{router}/v1/chat/completions", data=body.encode(), method="POST", headers={
        "Content-Type": "application/json", "x-meridian-policy": policy})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return response.headers["x-meridian-backend"], (time.perf_counter() - started) * 1000


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("stack")
    result = _meridian(directory, "up", "--topology", str(TOPOLOGY), "--routers-per-region", "1",
                       "--router-workers", str(WORKERS), "--detach")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield directory
    finally:
        if (directory / ".meridian" / "stack.json").exists():
            _meridian(directory, "down")


@pytest.fixture(scope="module")
def stack(stack_dir: Path) -> dict[str, Any]:
    loaded = read_stack(stack_dir / ".meridian" / "stack.json")
    assert loaded is not None
    return loaded


def test_stack_file(stack_dir: Path, stack: dict[str, Any]) -> None:
    path = stack_dir / ".meridian" / "stack.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(stack["routers"]) == {"us-east", "eu-west"}
    assert all(len(urls) == 1 for urls in stack["routers"].values())
    assert len(stack["control_plane"]["admin"]) == len(stack["control_plane"]["grpc"]) == 2
    assert stack["admin_token"] and stack["admin_token_env"] == "MERIDIAN_ADMIN_TOKEN"
    assert stack["etcd"]["url"].startswith("http://127.0.0.1:") and stack["redis"]["url"].startswith("redis://")
    assert stack["toxiproxy"]["implementation"] in ("real", "meridian")
    proxies = stack["toxiproxy"]["proxies"]
    assert {"etcd", "redis-cp", "redis-us-east", "redis-eu-west", "backend-us-dense", "backend-eu-linear",
            "xregion-us-east-eu-linear", "xregion-eu-west-us-dense", "cp-grpc-us-east-cp-1",
            "cp-grpc-eu-west-cp-2"} <= set(proxies)
    assert proxies["xregion-us-east-eu-linear"]["latency_ms"] == {"upstream": RTT_MS / 2, "downstream": RTT_MS / 2}
    assert set(stack["backends"]) == {"us-dense", "eu-linear"}
    assert (stack_dir / ".meridian" / "logs" / "router-us-east-1.log").exists()
    # The admin token never reaches a log.
    logs = "".join(p.read_text(errors="replace") for p in (stack_dir / ".meridian" / "logs").iterdir())
    assert stack["admin_token"] not in logs


def test_every_part_is_healthy(stack: dict[str, Any]) -> None:
    assert all(record.alive() for record in processes(stack))
    for urls in stack["routers"].values():
        for url in urls:
            assert _get(f"{url}/routing")["table"]["source"] == "control-plane"
    for admin in stack["control_plane"]["admin"]:
        assert _get(f"{admin}/health")["status"] == "ok"
    for backend in stack["backends"].values():
        assert _get(backend["url"].removesuffix("/v1") + "/health")["status"] == "ok"
    assert _get(f"{stack['toxiproxy']['url']}/version") is not None
    assert _get(f"{stack['etcd']['url']}/health")["health"] == "true"
    host, port = stack["redis"]["url"].removeprefix("redis://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16).startswith(b"+PONG")


def _worker_pids(router: str, tries: int = 60) -> dict[str, int]:
    """router id -> pid of each worker of `router` met over new connections (SO_REUSEPORT spreads them)."""
    seen: dict[str, int] = {}
    for _ in range(tries):
        routing = _get(f"{router}/routing")
        seen[routing["router_id"]] = routing["worker"]["pid"]
        if len(seen) == WORKERS:
            break
    return seen


def test_routers_run_their_workers_each_with_the_table(stack: dict[str, Any]) -> None:
    router = stack["routers"]["us-east"][0]
    assert set(_worker_pids(router)) == {"us-east-1-w0", "us-east-1-w1"}
    assert stack["router_workers"] == WORKERS
    # The launcher waited for every worker's control-plane table, not only the first to answer.
    for _ in range(10):
        assert _get(f"{router}/routing")["table"]["source"] == "control-plane"


def test_any_router_lists_every_region(stack: dict[str, Any]) -> None:
    body = _get(f"{stack['routers']['eu-west'][0]}/v1/regions")
    assert set(body["regions"]) == {"us-east", "eu-west"}
    for region, urls in stack["routers"].items():
        assert [(e["url"], e["healthy"]) for e in body["regions"][region]] == [(u, True) for u in urls]


def test_cross_region_call_takes_the_rtt(stack: dict[str, Any]) -> None:
    router = stack["routers"]["us-east"][0]
    times: dict[str, list[float]] = {"us-dense": [], "eu-linear": []}
    for _ in range(8):
        backend, elapsed_ms = _chat(router, "round-robin")
        times[backend].append(elapsed_ms)
    assert times["eu-linear"] and times["us-dense"]
    assert min(times["eu-linear"]) >= RTT_MS * TOLERANCE
    assert min(times["us-dense"]) < min(times["eu-linear"])


def test_nearest_from_a_region(stack_dir: Path, stack: dict[str, Any]) -> None:
    result = _meridian(stack_dir, "nearest", "--from", "eu-west", "--json", timeout_s=30)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["nearest"]["region"] == "eu-west"
    assert [c["region"] for c in answer["ranked"]] == ["eu-west", "us-east"]
    assert answer["ranked"][1]["rtt_ms"] >= RTT_MS


def test_second_up_is_refused(stack_dir: Path) -> None:
    result = _meridian(stack_dir, "up", "--topology", str(TOPOLOGY), "--detach", timeout_s=30)
    assert result.returncode == 1
    assert "already running" in result.stderr


def test_down_leaves_nothing_running(stack_dir: Path, stack: dict[str, Any]) -> None:
    records: list[ProcessRecord] = processes(stack)
    workers = [pid for urls in stack["routers"].values() for url in urls for pid in _worker_pids(url).values()]
    result = _meridian(stack_dir, "down", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert not [r.name for r in records if r.alive()]
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (stack_dir / ".meridian" / "stack.json").exists()
    assert (stack_dir / ".meridian" / "logs" / "etcd.log").exists()
    again = _meridian(stack_dir, "down", timeout_s=30)
    assert again.returncode == 0 and "no stack" in again.stdout
