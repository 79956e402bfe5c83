"""The routing signals end to end, on real simulator and router processes with the realistic workload: a
breaker judges a stream stuck before its first token at once, at most `max_ejection_percent` of a model's
deployments are ejected, the least bad deployment serves when every one is excluded, and a backend that
recovers gets its traffic back from its health probes' fresh figures."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import aiohttp
import pytest

from fixtures.sdk_clients import send_realistic
from meridian_common.service_process import ServiceProcess
from meridian_common.workload import REALISTIC
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

REALISTIC_SIM = ("--output-tokens", str(REALISTIC.answer_tokens_median), "--output-tokens-sigma",
                 str(REALISTIC.answer_tokens_sigma))


def _simulator(start: StartSimulator, name: str, *, ttft_ms: int, itl_ms: int) -> ServiceProcess:
    return start(name, "--model", "m", "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), *REALISTIC_SIM)


def _router_config(health_check: str, models: dict[str, tuple[str, str]], backends: list[ServiceProcess]) -> str:
    """A router of region `test` whose models (name -> (policy, breaker settings)) all use `backends`."""
    deployments = "\n".join(deployment_yaml(backend.name, backend.url) for backend in backends)
    sections = "".join(f"""  {name}:
    policy: {policy}
    breaker: {{{breaker}}}
    deployments:
{deployments}
""" for name, (policy, breaker) in models.items())
    return f"region: test\nhealth_check: {{{health_check}}}\nmodels:\n{sections}"


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def _breakers(router: ServiceProcess, model: str) -> dict[str, str]:
    deployments = _get_json(f"{router.url}/routing")["models"][model]["deployments"]
    return {d["name"]: d["breaker"] for d in deployments}


def _metric(router: ServiceProcess, name: str) -> float:
    text = urllib.request.urlopen(f"{router.url}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _set_sim(sim: ServiceProcess, **changes: object) -> None:
    request = urllib.request.Request(f"{sim.url}/sim/config", data=json.dumps(changes).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).read()


async def _streams(router: ServiceProcess, model: str, count: int, timeout_s: float) -> list[str]:
    """`count` concurrent streams of a median-length answer; returns x-meridian-reason of each."""
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me about routers."}], "stream": True,
            "max_tokens": REALISTIC.answer_tokens_median}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async def one() -> str:
            async with session.post(f"{router.url}/v1/chat/completions", json=body) as response:
                await response.read()
                assert response.status == 200
                return response.headers["x-meridian-reason"]

        return list(await asyncio.gather(*(one() for _ in range(count))))


def test_a_stream_stuck_before_its_first_token_opens_the_breaker_before_it_answers(
        start_simulator: StartSimulator, start_router: StartRouter) -> None:
    stuck = _simulator(start_simulator, "stuck", ttft_ms=3000, itl_ms=1)
    fine = _simulator(start_simulator, "fine", ttft_ms=5, itl_ms=1)
    # round-robin keeps sending to the stuck one: only its breaker can take it out.
    router = start_router("stuck-router", _router_config(
        "interval_s: 30, latency_probe_tokens: 0",
        {"m": ("round-robin", "ttft_p95_threshold_ms: 300, tpot_p95_threshold_ms: 50, min_requests: 3, "
                              "consecutive_failures: 2, open_duration_s: 30, max_ejection_percent: 50")},
        [stuck, fine]))

    async def scenario() -> tuple[dict[str, str], float]:
        started = time.monotonic()
        streams = asyncio.create_task(_streams(router, "m", 4, timeout_s=20))
        opened_at = float("inf")
        for _ in range(100):  # at most 2.5 s: the stuck streams' first tokens come at 3 s
            await asyncio.sleep(0.025)
            if _breakers(router, "m")["stuck"] == "open":
                opened_at = time.monotonic() - started
                break
        states = _breakers(router, "m")
        await streams
        return states, opened_at

    states, opened_at = asyncio.run(scenario())
    assert states == {"stuck": "open", "fine": "closed"}
    assert opened_at < 2.0, opened_at  # 300 ms after the streams were sent, not 3 s when they answered


def test_the_ejection_cap_and_panic_keep_a_model_serving(start_simulator: StartSimulator,
                                                        start_router: StartRouter) -> None:
    slow_a = _simulator(start_simulator, "slow-a", ttft_ms=600, itl_ms=1)
    slow_b = _simulator(start_simulator, "slow-b", ttft_ms=900, itl_ms=1)
    breaker = ("ttft_p95_threshold_ms: 200, tpot_p95_threshold_ms: 50, min_requests: 1, consecutive_failures: 1, "
               "open_duration_s: 60")
    router = start_router("cap-router", _router_config(
        "interval_s: 30, latency_probe_tokens: 0",
        {"capped": ("round-robin", f"{breaker}, max_ejection_percent: 50"),
         "uncapped": ("round-robin", f"{breaker}, max_ejection_percent: 100")},
        [slow_a, slow_b]))
    # Both are slow: with the cap at 50 %, one breaker opens and the other's trip is held.
    asyncio.run(_streams(router, "capped", 4, timeout_s=20))
    assert sorted(_breakers(router, "capped").values()) == ["closed", "open"]
    assert _metric(router, "meridian_breaker_trips_held_total") >= 1
    # At 100 % both open; the next request is still served, by the least bad, and says why.
    asyncio.run(_streams(router, "uncapped", 4, timeout_s=20))
    assert _breakers(router, "uncapped") == {"slow-a": "open", "slow-b": "open"}
    (reason,) = asyncio.run(_streams(router, "uncapped", 1, timeout_s=20))
    assert reason.startswith("panic: every deployment is excluded"), reason
    assert reason.endswith("least bad that answers: slow-a")
    assert _metric(router, "meridian_panic_routed_total") == 1


def test_a_recovered_backend_regains_its_traffic_within_seconds(start_simulator: StartSimulator,
                                                               start_router: StartRouter) -> None:
    fast = _simulator(start_simulator, "fast", ttft_ms=5, itl_ms=1)
    steady = _simulator(start_simulator, "steady", ttft_ms=30, itl_ms=2)
    router = start_router("recovery-router", _router_config(
        "interval_s: 1, timeout_s: 1",
        {"m": ("latency-first", "ttft_p95_threshold_ms: 400, tpot_p95_threshold_ms: 20, min_requests: 3, "
                                "consecutive_failures: 2, open_duration_s: 2")},
        [fast, steady]))
    base_url = f"{router.url}/v1"
    before = asyncio.run(send_realistic(base_url, "m", 4.0, workers=4, seed="before"))
    assert before.share("fast") >= 0.8, dict(before.backends)
    _set_sim(fast, ttft_ms=1500)  # its queue, say: every answer starts 1.5 s late
    reacting = asyncio.run(send_realistic(base_url, "m", 1.5, workers=4, seed="reacting"))
    during = asyncio.run(send_realistic(base_url, "m", 5.0, workers=4, seed="during"))
    _set_sim(fast, ttft_ms=5)
    # The breaker may reopen just after the recovery, on a trial (a latency probe) that started while the backend
    # was still slow: its 1.5 s first token, then open_duration_s (2 s), then the next probe or request as the
    # trial that closes it. Traffic is judged from 4 s after the recovery, once that worst case is past.
    settling = asyncio.run(send_realistic(base_url, "m", 4.0, workers=4, seed="settling"))
    after = asyncio.run(send_realistic(base_url, "m", 6.0, workers=4, seed="after"))
    assert not (before.errors or reacting.errors or during.errors or settling.errors or after.errors)
    assert during.share("fast") <= 0.5 * before.share("fast"), dict(during.backends)
    # From 4 s after its recovery the fast backend serves at least half of what it did before.
    assert after.share("fast") >= 0.5 * before.share("fast"), (dict(settling.backends), dict(after.backends))
