"""`meridian router --workers 2` as a real process tree: both workers serve the one port, /metrics answers for
both, a killed worker comes back, and SIGTERM drains and stops them all."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
import urllib.request
from typing import Any

import pytest

from meridian_common.service_process import ServiceProcess
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

WORKERS = 2
TRIES = 80  # connections to meet every worker: SO_REUSEPORT picks one per connection by its addresses' hash


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read()
    return json.loads(body) if url.endswith("/routing") else body.decode()


def _workers_seen(router: ServiceProcess, tries: int = TRIES) -> dict[int, tuple[str, int]]:
    """index -> (router id, pid) of each worker that answered /routing, one new connection per try."""
    seen: dict[int, tuple[str, int]] = {}
    for _ in range(tries):
        routing = _get(f"{router.url}/routing")
        worker = routing["worker"]
        seen[worker["index"]] = (routing["router_id"], worker["pid"])
        if len(seen) == WORKERS:
            break
    return seen


def _config(url: str) -> str:
    return f"""region: test
router_id: pool
health_check: {{latency_probe_tokens: 0}}
models:
  m:
    deployments:
{deployment_yaml("sim", url)}
"""


@pytest.fixture(scope="module")
def simulator(start_simulator: StartSimulator) -> ServiceProcess:
    return start_simulator("workers-sim", "--model", "m", "--ttft-ms", "1", "--itl-ms", "40", "--seed", "3")


@pytest.fixture(scope="module")
def pool(start_router: StartRouter, simulator: ServiceProcess) -> ServiceProcess:
    return start_router("workers-router", _config(simulator.url), None, "--workers", str(WORKERS))


def _chat(router: ServiceProcess, **extra: Any) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **extra}
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                       headers={"Content-Type": "application/json"})
    return connection.getresponse()


def test_every_worker_serves_the_port_under_its_own_id(pool: ServiceProcess) -> None:
    seen = _workers_seen(pool)
    assert sorted(seen) == [0, 1], f"only workers {sorted(seen)} answered {TRIES} connections"
    assert {router_id for router_id, _ in seen.values()} == {"pool-w0", "pool-w1"}
    assert len({pid for _, pid in seen.values()} | {pool.pid}) == WORKERS + 1
    for _ in range(6):
        response = _chat(pool)
        assert response.status == 200
        assert json.loads(response.read())["choices"][0]["message"]["content"]


def test_metrics_answer_for_every_worker(pool: ServiceProcess) -> None:
    text = _get(f"{pool.url}/metrics")
    assert 'meridian_worker_scrape_up{worker="0"} 1.0' in text
    assert 'meridian_worker_scrape_up{worker="1"} 1.0' in text
    assert text.count("# TYPE meridian_requests_total counter") == 1
    assert 'worker="0"' in text and 'worker="1"' in text


def test_a_killed_worker_is_restarted(pool: ServiceProcess) -> None:
    before = _workers_seen(pool)
    _, victim = before[1]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            seen = _workers_seen(pool, tries=20)
        except OSError:  # a connection queued on the dead worker's socket is reset (docs/router.md#workers)
            continue
        if 1 in seen and seen[1][1] != victim:
            assert seen[1][0] == "pool-w1"
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"worker 1 (pid {victim}) was not seen again under a new pid within 20 s")
    assert seen.get(0, before[0]) == before[0], "the other worker must be left alone"
    assert pool.alive()


def test_sigterm_drains_and_stops_every_worker(start_router: StartRouter, simulator: ServiceProcess) -> None:
    router = start_router("workers-drain", _config(simulator.url), None, "--workers", str(WORKERS))
    pids = [pid for _, pid in _workers_seen(router).values()]
    # About 0.8 s of stream in flight when SIGTERM comes: it must end whole, as on a lone router.
    response = _chat(router, stream=True, max_tokens=20)
    assert response.status == 200
    first = response.read1(64)
    router.process.send_signal(signal.SIGTERM)
    rest = response.read()
    assert b"data: [DONE]" in first + rest
    assert router.process.wait(timeout=15) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
