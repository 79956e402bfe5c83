"""Rate limits and queueing end to end: real simulators and a router, the official SDK's own retries
against 429s, bursts through the queue, clean 503s with Retry-After, and clients that leave the queue.
Answers are a few tokens on purpose: token buckets are checked to the token, and queue waits to the slot."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest

from meridian_common.service_process import ServiceProcess
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

CAPACITY = 8


@dataclass
class Stack:
    router: ServiceProcess
    fast: ServiceProcess
    burst: ServiceProcess
    slow: ServiceProcess


def _config(fast: str, burst: str, slow: str) -> str:
    return f"""region: test
listen: {{host: 127.0.0.1, port: 0}}
health_check: {{interval_s: 5}}
models:
  limited:
    client_limits: {{rpm: 120}}
    deployments:
{deployment_yaml("fast", fast)}
  tight:
    client_limits: {{rpm: 6, tpm: 100000}}
    deployments:
{deployment_yaml("fast", fast)}
  bursty:
    queue: {{size: 64, timeout_s: 20}}
    deployments:
{deployment_yaml("burst", burst, max_concurrency=CAPACITY)}
  impatient:
    queue: {{size: 8, timeout_s: 0.3}}
    deployments:
{deployment_yaml("slow", slow, max_concurrency=1)}
  small-queue:
    queue: {{size: 1, timeout_s: 10}}
    deployments:
{deployment_yaml("slow", slow, max_concurrency=1)}
  leaving:
    queue: {{size: 8, timeout_s: 10}}
    deployments:
{deployment_yaml("slow", slow, max_concurrency=1)}
  deadline:
    queue: {{size: 8, timeout_s: 10}}
    deployments:
{deployment_yaml("slow", slow, max_concurrency=1)}
  capped:
    policy: cost-first
    deployments:
{deployment_yaml("fast", fast, cost_in=0.01, cost_out=0.01, extra="rpm_limit: 3")}
{deployment_yaml("burst", burst, cost_in=5, cost_out=5)}
  no-queue:
    queue: {{size: 0}}
    deployments:
{deployment_yaml("slow", slow, max_concurrency=1)}
"""


@pytest.fixture(scope="module")
def stack(start_simulator: StartSimulator, start_router: StartRouter) -> Stack:
    fast = start_simulator("fast", "--model", "m", "--ttft-ms", "1", "--itl-ms", "0", "--output-tokens", "2")
    # Far more room than the router's max_concurrency: the simulator's peak shows what the router sent.
    burst = start_simulator("burst", "--model", "m", "--ttft-ms", "40", "--itl-ms", "5", "--output-tokens", "4",
                            "--capacity", "1000")
    slow = start_simulator("slow", "--model", "m", "--ttft-ms", "800", "--itl-ms", "0", "--output-tokens", "1",
                           "--capacity", "1000")
    router = start_router("router", _config(fast.url, burst.url, slow.url))
    return Stack(router, fast, burst, slow)


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def _body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def _post_many(url: str, model: str, count: int, *, headers: dict[str, str] | None = None,
                     timeout_s: float = 30.0) -> list[tuple[int, dict[str, str], dict[str, Any], float]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async def one() -> tuple[int, dict[str, str], dict[str, Any], float]:
            started = time.monotonic()
            async with session.post(f"{url}/v1/chat/completions", json=_body(model), headers=headers) as response:
                return (response.status, dict(response.headers), await response.json(),
                        time.monotonic() - started)

        return await asyncio.gather(*(one() for _ in range(count)))


def test_the_sdk_retries_recover_from_429s_within_the_limit(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.router.url}/v1", api_key="sdk-client", max_retries=3)
    started = time.monotonic()
    for _ in range(125):  # 120 from the full bucket, then 2 per second
        raw = client.chat.completions.with_raw_response.create(model="limited", messages=[
            {"role": "user", "content": "x"}], max_tokens=1)
        assert raw.http_response.status_code == 200
        assert raw.headers["x-ratelimit-limit-requests"] == "120"
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed <= 15, elapsed  # five waits of about half a second each
    metrics = urllib.request.urlopen(f"{stack.router.url}/metrics", timeout=5).read().decode()
    assert 'meridian_rate_limited_total{model="limited",region="test",scope="client"}' in metrics


def test_over_the_limit_is_a_429_in_openai_shape_with_retry_headers(stack: Stack) -> None:
    results = asyncio.run(_post_many(stack.router.url, "tight", 8, headers={"Authorization": "Bearer tight-key"}))
    statuses = sorted(status for status, *_ in results)
    assert statuses == [200] * 6 + [429] * 2
    for status, headers, body, _ in results:
        for kind in ("requests", "tokens"):
            assert {f"x-ratelimit-{name}-{kind}" for name in ("limit", "remaining", "reset")} <= set(headers)
        if status == 429:
            assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "rate_limit_exceeded"
            assert int(headers["Retry-After"]) >= 1 and float(headers["retry-after-ms"]) > 0
            assert headers["x-ratelimit-remaining-requests"] == "0"


def test_a_deployment_at_its_rate_limit_is_passed_over_while_another_can_serve(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.router.url}/v1", api_key="unused", max_retries=0)
    served = [client.chat.completions.with_raw_response.create(
        model="capped", messages=[{"role": "user", "content": "x"}], max_tokens=1).headers["x-meridian-backend"]
        for _ in range(6)]
    assert served == ["fast"] * 3 + ["burst"] * 3
    request = urllib.request.Request(f"{stack.router.url}/v1/route", data=json.dumps(_body("capped")).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        candidates = json.loads(response.read())["decisions"][0]["candidates"]
    assert candidates[0]["excluded_because"] == "rate limited: rpm 3 reached"


def test_a_burst_of_four_times_capacity_is_served_through_the_queue(stack: Stack) -> None:
    results = asyncio.run(_post_many(stack.router.url, "bursty", 4 * CAPACITY))
    assert [status for status, *_ in results] == [200] * (4 * CAPACITY)
    assert any(float(headers.get("x-meridian-queue-wait-ms", 0)) > 0 for _, headers, _, _ in results)
    sim = _get_json(f"{stack.burst.url}/sim/config")
    assert sim["peak_running"] <= CAPACITY
    assert sim["served"] >= 4 * CAPACITY
    routing = _get_json(f"{stack.router.url}/routing")
    assert routing["models"]["bursty"]["queue"] == {"size": 64, "timeout_s": 20.0, "depth": 0}


def test_a_wait_past_the_queue_timeout_is_a_clean_503_with_retry_after(stack: Stack) -> None:
    results = asyncio.run(_post_many(stack.router.url, "impatient", 4))
    served = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] == 503]
    assert len(served) == 1 and len(rejected) == 3
    for _, headers, body, elapsed in rejected:
        assert body["error"]["code"] == "queue_timeout" and int(headers["Retry-After"]) >= 1
        assert 0.25 <= elapsed < 0.8


def test_the_client_deadline_bounds_the_wait(stack: Stack) -> None:
    async def scenario() -> tuple[list[Any], list[Any]]:
        holder = asyncio.create_task(_post_many(stack.router.url, "deadline", 1))
        await asyncio.sleep(0.1)
        waiting = await _post_many(stack.router.url, "deadline", 2, headers={"x-meridian-deadline-ms": "200"})
        return await holder, waiting

    served, rejected = asyncio.run(scenario())
    assert served[0][0] == 200
    for status, headers, body, elapsed in rejected:
        assert status == 503 and body["error"]["code"] == "queue_timeout" and "Retry-After" in headers
        assert 0.15 <= elapsed < 0.6


def test_a_full_queue_answers_503_at_once(stack: Stack) -> None:
    results = asyncio.run(_post_many(stack.router.url, "small-queue", 4))
    codes = sorted((r[0], r[2].get("error", {}).get("code")) for r in results)
    assert codes == [(200, None), (200, None), (503, "queue_full"), (503, "queue_full")]
    assert all(r[3] < 0.3 and "Retry-After" in r[1] for r in results if r[0] == 503)
    no_queue = asyncio.run(_post_many(stack.router.url, "no-queue", 2))
    assert sorted(r[0] for r in no_queue) == [200, 503]


def test_a_client_that_disconnects_leaves_the_queue(stack: Stack) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            url = f"{stack.router.url}/v1/chat/completions"
            holder = asyncio.create_task(session.post(url, json=_body("leaving")))
            await asyncio.sleep(0.1)
            with pytest.raises(TimeoutError):
                async with session.post(url, json=_body("leaving"), timeout=aiohttp.ClientTimeout(total=0.3)):
                    pass
            for _ in range(40):
                if _get_json(f"{stack.router.url}/routing")["models"]["leaving"]["queue"]["depth"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert _get_json(f"{stack.router.url}/routing")["models"]["leaving"]["queue"]["depth"] == 0
            response = await holder
            assert response.status == 200
            response.release()

    before = _get_json(f"{stack.slow.url}/sim/config")["served"]
    asyncio.run(scenario())
    time.sleep(0.2)
    sim = _get_json(f"{stack.slow.url}/sim/config")
    assert sim["served"] == before + 1  # the one that left never reached the backend
