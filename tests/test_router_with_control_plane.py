"""Routers and the control plane together, all real processes: tables flow to routers and are ACKed, a
policy push reaches them, killing the leader costs no client error, a router restarted with the control
plane down serves its persisted table, and telemetry resumes after Redis restarts. Answers are a few tokens
on purpose: these check table flow and failover, not routing under load (that is
tests/regions/test_realistic_traffic.py, with the realistic workload)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import redis

from benchmarks.control_plane_stack import MODEL, ControlPlaneStack, chat, http_json, wait_for
from meridian_common.service_process import ServiceProcess
from regions.local_services import start_redis

pytestmark = pytest.mark.integration

EU_ROUTER = "router-eu-west-1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneStack]:
    stack = ControlPlaneStack(tmp_path_factory.mktemp("router-cp"), lease_ttl_s=2.0)
    try:
        stack.start(routers_per_region=1)
        yield stack
    finally:
        stack.stop()


def _router(stack: ControlPlaneStack) -> ServiceProcess:
    return stack.routers[EU_ROUTER]


def _routing(stack: ControlPlaneStack) -> dict:
    return stack.routing(_router(stack))


def test_router_applies_and_acks_the_control_plane_table(stack: ControlPlaneStack) -> None:
    routing = _routing(stack)
    table = routing["table"]
    assert table["source"] == "control-plane" and table["version"] > 0 and table["epoch"] > 0
    assert {d["name"] for d in routing["models"][MODEL]["deployments"]} == {"sim-eu-west", "sim-us-east"}
    remote = next(d for d in routing["models"][MODEL]["deployments"] if d["name"] == "sim-us-east")
    assert remote["added_latency_ms"] == 80
    assert routing["control_plane"]["link"] == "connected"

    def acked() -> dict | None:
        status = http_json("GET", f"{stack.admin_url()}/v1/status", token=stack.token)[1]
        ours = [r for r in status["routers"] if r["region"] == "eu-west"]
        return status if ours and ours[0]["version"] == table["version"] else None

    status = wait_for(acked, "status to show the router's ACK")
    assert status["leader"]["epoch"] > 0 and len(status["replicas"]) == 2
    assert {r["region"] for r in status["routers"]} == {"eu-west", "us-east"}
    assert chat(_router(stack).url) == 200


def test_policy_push_reaches_the_router(stack: ControlPlaneStack) -> None:
    before = _routing(stack)["table"]["version"]
    status, reply = http_json("POST", f"{stack.admin_url()}/v1/policy/set",
                              {"region": "eu-west", "model": MODEL, "policy": "cost-first", "latency_budget_ms": 800},
                              token=stack.token)
    assert status == 200, reply
    routing = wait_for(lambda: (r := _routing(stack))["models"][MODEL]["policy"] == "cost-first" and r,
                       "the pushed policy to reach the router", timeout_s=5)
    assert routing["table"]["version"] > before
    assert routing["models"][MODEL]["latency_budget_ms"] == 800
    refused = http_json("POST", f"{stack.admin_url()}/v1/policy/set",
                        {"region": "eu-west", "model": MODEL, "policy": "fastest"}, token=stack.token)
    assert refused[0] == 400
    assert _routing(stack)["models"][MODEL]["policy"] == "cost-first"


def test_telemetry_reaches_redis(stack: ControlPlaneStack) -> None:
    for _ in range(5):
        assert chat(_router(stack).url) == 200
    assert stack.redis is not None
    client = redis.Redis.from_url(stack.redis.url)
    wait_for(lambda: client.xlen("meridian:telemetry:eu-west") > 0, "telemetry in Redis")
    assert _routing(stack)["telemetry"]["connected"] is True


def test_leader_kill_costs_no_client_error(stack: ControlPlaneStack) -> None:
    router = _router(stack)
    old_leader = wait_for(stack.leader, "a leader")
    epoch_before = _routing(stack)["table"]["epoch"]
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline and len(statuses) < 5000:
            statuses.append(chat(router.url))

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(0.3)
        killed_at = time.monotonic()
        stack.replicas[old_leader].kill()
        wait_for(lambda: _routing(stack)["table"]["epoch"] > epoch_before,
                 "a table of the new leader's epoch at the router", timeout_s=stack.lease_ttl_s + 4)
        failover_s = time.monotonic() - killed_at
        time.sleep(0.3)
    finally:
        stop.set()
        sender.join()
    assert stack.leader() not in (None, old_leader)
    assert failover_s <= stack.lease_ttl_s + 1.5, failover_s
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))


def test_policy_set_rate_limits_apply_live(stack: ControlPlaneStack) -> None:
    # After the leader-kill test, whose unthrottled traffic these limits would turn into 429s.
    status, reply = http_json("POST", f"{stack.admin_url()}/v1/policy/set",
                              {"region": "eu-west", "model": MODEL, "rpm": 600, "tpm": 90000}, token=stack.token)
    assert status == 200, reply
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()

    def limits() -> dict[str, str] | None:
        request = urllib.request.Request(f"{_router(stack).url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            headers = dict(response.headers)
        return headers if headers.get("x-ratelimit-limit-requests") == "600" else None

    headers = wait_for(limits, "the pushed client limits to reach the router", timeout_s=5)
    assert headers["x-ratelimit-limit-tokens"] == "90000"
    assert int(headers["x-ratelimit-remaining-requests"]) < 600


def test_router_restarted_with_control_plane_down_serves_its_persisted_table(stack: ControlPlaneStack) -> None:
    version = _routing(stack)["table"]["version"]
    for replica in stack.replicas.values():
        replica.stop()
    _router(stack).stop()
    stack.start_router(EU_ROUTER, "eu-west")
    routing = _routing(stack)
    assert routing["table"]["source"] == "disk" and routing["table"]["version"] == version
    assert routing["models"][MODEL]["policy"] == "cost-first"
    assert http_json("GET", f"{_router(stack).url}/ready")[0] == 200
    assert all(chat(_router(stack).url) == 200 for _ in range(5))


def test_telemetry_resumes_after_redis_restarts(stack: ControlPlaneStack) -> None:
    router = _router(stack)
    assert stack.redis is not None
    port = stack.redis.port
    stack.redis.kill()
    for _ in range(3):
        assert chat(router.url) == 200
    wait_for(lambda: _routing(stack)["telemetry"]["connected"] is False, "the publisher to notice")
    stack.redis = start_redis(stack.workdir / "redis-again", stack.workdir / "redis-again.log", port=port)
    restarted_at = time.monotonic()
    for _ in range(3):
        assert chat(router.url) == 200
    wait_for(lambda: _routing(stack)["telemetry"]["connected"] is True, "telemetry to resume", timeout_s=5)
    assert time.monotonic() - restarted_at < 3
    client = redis.Redis.from_url(stack.redis.url)
    wait_for(lambda: client.xlen("meridian:telemetry:eu-west") > 0, "new samples in the restarted Redis")
