"""What a backend's answer means, end to end on real simulator and router processes with the realistic workload:
a deployment answering 404 (wrong served_model) or 401 (wrong key) fast is tried a handful of times and then
left alone, its breaker and health out and saying why; a 429 with Retry-After moves traffic away for that long
and nothing more; a 400 reaches the client as the backend sent it and counts nothing against the deployment."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import openai
import pytest

from fixtures.sdk_clients import send_realistic
from meridian_common.service_process import ServiceProcess
from meridian_common.workload import REALISTIC
from simulator.admin_client import change_sim_config, read_sim_config
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

REALISTIC_SIM = ("--output-tokens", str(REALISTIC.answer_tokens_median), "--output-tokens-sigma",
                 str(REALISTIC.answer_tokens_sigma))


def _router_config(deployments: list[str], *, health_check: str,
                   breaker: str = "min_requests: 3, consecutive_failures: 2, open_duration_s: 30, "
                                  "max_ejection_percent: 67") -> str:
    listed = "\n".join(deployments)
    return f"""region: test
health_check: {{{health_check}}}
models:
  m:
    policy: latency-first
    breaker: {{{breaker}}}
    deployments:
{listed}
"""


def _get_json(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.loads(response.read()))


def _deployments(router: ServiceProcess) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in _get_json(f"{router.url}/routing")["models"]["m"]["deployments"]}


def _metric(router: ServiceProcess, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"{router.url}/metrics", timeout=5).read().decode()
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(label in line for label in wanted))


def _wait_for(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.05) + 1):
        if check():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return bool(check())


def test_misconfigured_deployments_are_tried_a_handful_of_times_then_left_out(
        start_simulator: StartSimulator, start_router: StartRouter) -> None:
    good = start_simulator("good", "--model", "m", "--ttft-ms", "20", "--itl-ms", "2", *REALISTIC_SIM)
    # Both answer at once, the fastest a deployment can look: the bug was that this won latency-first.
    wrong_model = start_simulator("wrong-model", "--model", "other", "--ttft-ms", "0", "--itl-ms", "0")
    wrong_key = start_simulator("wrong-key", "--model", "m", "--ttft-ms", "0", "--itl-ms", "0",
                                "--api-key-env", "SIM_KEY", env={"SIM_KEY": "sk-the-right-key"})
    router = start_router("misconfigured-router", _router_config(
        [deployment_yaml("wrong-model", wrong_model.url), deployment_yaml("wrong-key", wrong_key.url,
                                                                          extra="api_key_env: BACKEND_KEY"),
         deployment_yaml("good", good.url)],
        health_check="interval_s: 1, timeout_s: 1, unhealthy_after: 2, latency_probe_tokens: 0"),
        env={"BACKEND_KEY": "sk-a-stale-key"})
    tally = asyncio.run(send_realistic(f"{router.url}/v1", "m", 4.0, workers=4, seed="misconfigured"))
    assert not tally.errors, tally.errors[:3]  # each one fell back before its first byte
    assert tally.served >= 20 and tally.backends == {"good": tally.served}
    # Attempts on a bad one, each a fallback: a couple before its breaker and health go out.
    tried = {name: _metric(router, "meridian_fallbacks_total", deployment=name, reason=reason)
             for name, reason in (("wrong-model", "http_404"), ("wrong-key", "http_401"))}
    assert all(1 <= attempts <= 8 for attempts in tried.values()), (tried, tally.served)
    assert read_sim_config(wrong_model.url)["rejected"] == tried["wrong-model"]  # its /models answers 200

    def probes_say_why() -> bool:
        found = _deployments(router)
        return all(str(found[name]["unhealthy_reason"]).startswith("probe:") for name in tried)

    assert _wait_for(probes_say_why, 5.0), _deployments(router)
    found = _deployments(router)
    assert found["wrong-model"]["unhealthy_reason"] == (
        "probe: GET /models does not list served_model 'm' (it lists: other)")
    assert found["wrong-key"]["unhealthy_reason"] == "probe: GET /models answered 401 (misconfigured)"
    assert (found["wrong-model"]["misconfigured_status"], found["wrong-key"]["misconfigured_status"]) == (404, 401)
    assert found["good"]["healthy"] and found["good"]["breaker"] == "closed"
    assert {found[name]["breaker"] for name in tried} <= {"open", "closed"}  # the ejection cap may hold one
    assert not any(found[name]["healthy"] for name in tried)
    log = router.log_path.read_text()
    assert log.count("deployment_misconfigured model=m deployment=wrong-model status=404") == 1
    assert log.count("deployment_misconfigured model=m deployment=wrong-key status=401") == 1
    assert "sk-a-stale-key" not in log and "sk-the-right-key" not in log


def test_a_429_moves_traffic_away_for_its_retry_after_and_then_back(start_simulator: StartSimulator,
                                                                     start_router: StartRouter) -> None:
    fast = start_simulator("fast-429", "--model", "m", "--ttft-ms", "5", "--itl-ms", "1", *REALISTIC_SIM)
    steady = start_simulator("steady-429", "--model", "m", "--ttft-ms", "40", "--itl-ms", "3", *REALISTIC_SIM)
    router = start_router("saturated-router", _router_config(
        [deployment_yaml("fast-429", fast.url), deployment_yaml("steady-429", steady.url)],
        health_check="interval_s: 1, timeout_s: 1"))
    base_url = f"{router.url}/v1"
    before = asyncio.run(send_realistic(base_url, "m", 2.0, workers=4, seed="429-before"))
    assert before.share("fast-429") >= 0.8, dict(before.backends)
    change_sim_config(fast.url, throttle_rate=1.0, retry_after_s=8)
    during = asyncio.run(send_realistic(base_url, "m", 1.5, workers=4, seed="429-during"))
    throttled = read_sim_config(fast.url)["throttled"]
    # The first 429 took it out for 8 s, latency probes included: only requests already on their way to it met
    # a 429.
    assert 1 <= throttled <= 6, throttled
    assert not during.errors and during.backends == {"steady-429": during.served}, dict(during.backends)
    fast_now = _deployments(router)["fast-429"]
    assert str(fast_now["saturated"]).startswith("backend saturated: answered 429, no request for ")
    assert fast_now["breaker"] == "closed" and fast_now["healthy"]  # saturated is not broken
    (decision,) = _get_json(f"{router.url}/v1/route", {"model": "m", "messages": [
        {"role": "user", "content": "hi"}]})["decisions"]
    excluded = {c["name"]: c["excluded_because"] for c in decision["candidates"]}
    assert str(excluded["fast-429"]).startswith("backend saturated: answered 429"), excluded
    change_sim_config(fast.url, throttle_rate=0.0)
    assert _wait_for(lambda: _deployments(router)["fast-429"]["saturated"] is None, 10.0)
    after = asyncio.run(send_realistic(base_url, "m", 3.0, workers=4, seed="429-after"))
    assert not after.errors and after.share("fast-429") >= 0.5, dict(after.backends)
    assert read_sim_config(fast.url)["throttled"] == throttled


def test_a_400_from_the_backend_reaches_the_client_and_counts_nothing_against_it(
        start_simulator: StartSimulator, start_router: StartRouter) -> None:
    only = start_simulator("strict", "--model", "m", "--ttft-ms", "5", "--itl-ms", "1", *REALISTIC_SIM)
    router = start_router("client-error-router", _router_config(
        [deployment_yaml("strict", only.url)], health_check="interval_s: 1, timeout_s: 1",
        breaker="min_requests: 3, consecutive_failures: 2, open_duration_s: 30"))
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    for _ in range(6):  # more than the breaker's consecutive_failures and min_requests
        with pytest.raises(openai.BadRequestError) as raised:
            # Above the backend's own limit of 65,536 tokens: a request only the backend can judge.
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=65_537)
        assert raised.value.status_code == 400
        assert raised.value.code == "invalid_value" and raised.value.param == "max_tokens"
        assert raised.value.response.headers["x-meridian-backend"] == "strict"
        assert raised.value.response.headers["x-meridian-attempts"] == "1"
    strict = _deployments(router)["strict"]
    assert strict["breaker"] == "closed" and strict["healthy"]
    assert (strict["stats"]["requests"], strict["stats"]["errors"]) == (0, 0)
    assert _metric(router, "meridian_requests_total", deployment="strict", status="400") == 6
    assert _metric(router, "meridian_fallbacks_total") == 0
    tally = asyncio.run(send_realistic(f"{router.url}/v1", "m", 1.5, workers=2, seed="after-400"))
    assert not tally.errors and tally.served >= 5
