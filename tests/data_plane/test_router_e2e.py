"""The router end to end: real simulator and router processes, driven by the official `openai` SDK (sync,
async, streaming) as a user would, and by raw HTTP for bad input. Answers are a few tokens on purpose: these
check the protocol (errors, headers, usage, fallback before the first byte); routing under realistic traffic
is tests/regions/test_realistic_traffic.py and tests/data_plane/test_routing_signals_e2e.py."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from meridian_common.service_process import ServiceProcess
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

SECRET = "sk-backend-secret-7f3a9c"
ADMIN_TOKEN = "admin-token-for-tests"


@dataclass
class Stack:
    router: ServiceProcess
    fast: ServiceProcess
    slow: ServiceProcess
    broken: ServiceProcess
    ollama: ServiceProcess
    silent: ServiceProcess

    @property
    def base_url(self) -> str:
        return f"{self.router.url}/v1"


def _config(fast: str, slow: str, broken: str, ollama: str, silent: str) -> str:
    return f"""region: test
listen: {{host: 127.0.0.1, port: 0}}
max_body_bytes: 65536
max_attempts: 3
admin_token_env: TEST_ADMIN_TOKEN
# No latency probes: the dry-run test counts the completions the simulators serve.
health_check: {{interval_s: 0.3, timeout_s: 0.5, healthy_after: 2, unhealthy_after: 2, latency_probe_tokens: 0}}
models:
  m:
    policy: latency-first
    deployments:
{deployment_yaml("fast", fast, extra="api_key_env: TEST_BACKEND_KEY")}
{deployment_yaml("slow", slow)}
  flaky:
    policy: cost-first
    breaker: {{error_rate_threshold: 0.5, min_requests: 3, open_duration_s: 60, window_s: 30}}
    deployments:
{deployment_yaml("broken", broken, cost_in=0.01, cost_out=0.01)}
{deployment_yaml("fast", fast, cost_in=5, cost_out=5)}
  cached:
    cache: {{enabled: true}}
    deployments:
{deployment_yaml("fast", fast)}
  ollama-model:
    deployments:
{deployment_yaml("ollama", ollama)}
  silent-model:
    deployments:
{deployment_yaml("silent", silent)}
  dead:
    fallbacks: [m]
    deployments:
{deployment_yaml("nowhere", "http://127.0.0.1:9")}
  nothing:
    deployments:
{deployment_yaml("nowhere", "http://127.0.0.1:9")}
  failing:
    deployments:
{deployment_yaml("broken", broken)}
"""


@pytest.fixture(scope="module")
def stack(start_simulator: StartSimulator, start_router: StartRouter) -> Stack:
    fast = start_simulator("fast", "--model", "m", "--ttft-ms", "2", "--itl-ms", "1", "--seed", "1")
    slow = start_simulator("slow", "--model", "m", "--ttft-ms", "60", "--itl-ms", "2", "--seed", "2")
    broken = start_simulator("broken", "--model", "m", "--ttft-ms", "1", "--error-rate", "1.0")
    ollama = start_simulator("ollama", "--model", "m", "--usage-format", "ollama")
    silent = start_simulator("silent", "--model", "m", "--usage-format", "none")
    router = start_router(
        "router", _config(fast.url, slow.url, broken.url, ollama.url, silent.url),
        env={"TEST_BACKEND_KEY": SECRET, "TEST_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    return Stack(router, fast, slow, broken, ollama, silent)


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _chat(model: str = "m", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}).encode()


def _sim_config(sim: ServiceProcess) -> dict[str, Any]:
    return json.loads(_http("GET", f"{sim.url}/sim/config")[2])


def test_sync_sdk_chat_completion_carries_routing_headers(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hello"}], max_tokens=5)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    headers = raw.headers
    assert headers["x-meridian-region"] == "test"
    assert headers["x-meridian-policy"] == "latency-first"
    assert headers["x-meridian-table-version"] == "0"
    assert headers["x-meridian-backend"] in {"fast", "slow"}
    assert headers["x-meridian-reason"]


def test_latency_first_settles_on_the_faster_deployment(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    served = [client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "x"}], max_tokens=2).headers["x-meridian-backend"]
        for _ in range(30)]
    assert served[-10:].count("fast") >= 9, served


def test_async_sdk_and_streaming_with_usage(stack: Stack) -> None:
    async def run() -> tuple[str, list[str], Any]:
        client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
        completion = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}],
                                                          max_tokens=3)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "b"}], max_tokens=8, stream=True,
            stream_options={"include_usage": True})
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        await client.close()
        return completion.choices[0].message.content or "", pieces, usage

    text, pieces, usage = asyncio.run(run())
    assert text
    assert len(pieces) == 8
    assert usage is not None and usage.completion_tokens == 8


def test_sync_streaming_and_completions_and_embeddings(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}],
                                                 max_tokens=4, stream=True))
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4
    completion = client.completions.create(model="m", prompt="Once upon", max_tokens=3)
    assert completion.choices[0].text
    embedding = client.embeddings.create(model="m", input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding


def test_models_lists_logical_models(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    names = {model.id for model in client.models.list()}
    assert {"m", "flaky", "cached", "dead", "nothing"} <= names


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "invalid_json"),
        (json.dumps({"model": "m"}).encode(), {}, 400, "missing_required_parameter"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), {}, 400, "missing_model"),
        (_chat("no-such-model"), {}, 404, "model_not_found"),
        (_chat(), {"x-meridian-policy": "fastest"}, 400, "invalid_policy"),
        (_chat(), {"x-latency-budget-ms": "-3"}, 400, "invalid_latency_budget"),
        (_chat(), {"x-meridian-priority": "vibes"}, 400, "invalid_priority"),
        (_chat(filler="x" * 70_000), {}, 413, "request_too_large"),
    ],
)
def test_bad_input_gets_openai_errors(stack: Stack, body: bytes, headers: dict[str, str], status: int,
                                      code: str) -> None:
    got, _, payload = _http("POST", f"{stack.base_url}/chat/completions", body,
                            {"Content-Type": "application/json", **headers})
    assert got == status
    error = json.loads(payload)["error"]
    assert error["code"] == code and error["message"] and set(error) == {"message", "type", "param", "code"}


def test_sdk_sees_not_found_for_unknown_model(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="unknown", messages=[{"role": "user", "content": "x"}])


def test_errors_before_the_first_byte_fall_back_and_open_the_breaker(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    served = [client.chat.completions.with_raw_response.create(
        model="flaky", messages=[{"role": "user", "content": "x"}], max_tokens=2).headers["x-meridian-backend"]
        for _ in range(8)]
    assert set(served) == {"fast"}  # every request succeeded, the broken cheap one never answered
    routing = json.loads(_http("GET", f"{stack.router.url}/routing")[2])
    breakers = {d["name"]: d["breaker"] for d in routing["models"]["flaky"]["deployments"]}
    assert breakers["broken"] == "open"
    metrics = _http("GET", f"{stack.router.url}/metrics")[2].decode()
    assert 'meridian_breaker_transitions_total{' in metrics and 'to_state="open"' in metrics
    assert "meridian_fallbacks_total{" in metrics


def test_fallback_model_serves_when_none_of_its_own_can(stack: Stack) -> None:
    status, headers, body = _http("POST", f"{stack.base_url}/chat/completions", _chat("dead"),
                                  {"Content-Type": "application/json"})
    assert status == 200, body
    assert headers["x-meridian-model"] == "m"


def test_no_healthy_deployment_is_503_with_retry_after(stack: Stack) -> None:
    status, headers, body = _http("POST", f"{stack.base_url}/chat/completions", _chat("nothing"),
                                  {"Content-Type": "application/json"})
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert json.loads(body)["error"]["code"] == "no_healthy_deployment"


def test_errors_keep_the_backends_details_to_the_log(stack: Stack) -> None:
    """Which host refused, and what a failing backend said, are for operators: the log has them, the client's
    503 names only the kind of failure."""
    for model, detail in (("nothing", "127.0.0.1"), ("failing", "simulated backend failure")):
        status, _, body = _http("POST", f"{stack.base_url}/chat/completions", _chat(model),
                                {"Content-Type": "application/json"})
        assert status == 503, body
        message = json.loads(body)["error"]["message"]
        assert detail not in message and "Cannot connect" not in message, message
    assert "simulated backend failure" in stack.router.log_path.read_text()


def test_usage_is_normalised_or_estimated(stack: Stack) -> None:
    _, headers, body = _http("POST", f"{stack.base_url}/chat/completions", _chat("ollama-model", max_tokens=4),
                             {"Content-Type": "application/json"})
    assert headers["x-meridian-usage"] == "reported"
    assert json.loads(body)["usage"]["completion_tokens"] == 4
    _, headers, body = _http("POST", f"{stack.base_url}/chat/completions", _chat("silent-model", max_tokens=4),
                             {"Content-Type": "application/json"})
    assert headers["x-meridian-usage"] == "estimated"
    assert json.loads(body)["usage"]["completion_tokens"] > 0
    metrics = _http("GET", f"{stack.router.url}/metrics")[2].decode()
    assert 'source="estimated"' in metrics and "meridian_cost_dollars_total{" in metrics


def test_response_cache_hits_on_deterministic_repeats(stack: Stack) -> None:
    body = _chat("cached", temperature=0, max_tokens=3)
    first = _http("POST", f"{stack.base_url}/chat/completions", body, {"Content-Type": "application/json"})
    second = _http("POST", f"{stack.base_url}/chat/completions", body, {"Content-Type": "application/json"})
    assert first[1]["x-meridian-cache"] == "miss" and second[1]["x-meridian-cache"] == "hit"
    assert float(first[1]["x-meridian-cost-usd"]) > 0 and second[1]["x-meridian-cost-usd"] == "0"  # a hit is free
    assert json.loads(first[2])["choices"] == json.loads(second[2])["choices"]
    hot = _chat("cached", temperature=0.7, max_tokens=3)
    assert "x-meridian-cache" not in _http("POST", f"{stack.base_url}/chat/completions", hot,
                                           {"Content-Type": "application/json"})[1]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert _http("GET", f"{stack.router.url}/cache/stats")[0] == 401
    stats = json.loads(_http("GET", f"{stack.router.url}/cache/stats", headers=admin)[2])
    assert stats["hits"] >= 1 and stats["backend"] == "memory"
    assert json.loads(_http("DELETE", f"{stack.router.url}/cache", headers=admin)[2])["removed"] >= 1
    third = _http("POST", f"{stack.base_url}/chat/completions", body, {"Content-Type": "application/json"})
    assert third[1]["x-meridian-cache"] == "miss"


def test_route_dry_run_decides_without_calling_a_backend(stack: Stack) -> None:
    served_before = _sim_config(stack.fast)["served"] + _sim_config(stack.slow)["served"]
    status, _, body = _http("POST", f"{stack.base_url}/route", _chat(), {"Content-Type": "application/json",
                                                                          "x-meridian-policy": "scored"})
    assert status == 200
    decision = json.loads(body)["decisions"][0]
    assert decision["policy"] == "scored" and decision["pick"] in {"fast", "slow"}
    assert {c["name"] for c in decision["candidates"]} == {"fast", "slow"}
    assert all(c["score"] is not None for c in decision["candidates"])
    assert _sim_config(stack.fast)["served"] + _sim_config(stack.slow)["served"] == served_before


def test_secrets_never_leave_the_router(stack: Stack) -> None:
    routing = _http("GET", f"{stack.router.url}/routing")[2].decode()
    metrics = _http("GET", f"{stack.router.url}/metrics")[2].decode()
    assert "TEST_BACKEND_KEY" in routing  # the variable's name is shown, its value never
    for text in (routing, metrics, stack.router.log_path.read_text()):
        assert SECRET not in text and ADMIN_TOKEN not in text


def test_backend_receives_the_key_from_the_environment(stack: Stack) -> None:
    # The simulator echoes nothing back, so check the router sent an Authorization header by its count.
    before = _sim_config(stack.fast)
    _http("POST", f"{stack.base_url}/chat/completions", _chat(max_tokens=1), {"Content-Type": "application/json"})
    assert _sim_config(stack.fast)["served"] >= before["served"]


def test_health_endpoints_and_metrics(stack: Stack) -> None:
    assert _http("GET", f"{stack.router.url}/health")[0] == 200
    status, _, body = _http("GET", f"{stack.router.url}/ready")
    assert status == 200 and json.loads(body)["table_source"] == "config"
    metrics = _http("GET", f"{stack.router.url}/metrics")[2].decode()
    for name in ("meridian_requests_total", "meridian_request_latency_seconds_bucket", "meridian_ttft_seconds",
                 "meridian_in_flight_requests", "meridian_tokens_total", "meridian_table_version",
                 "meridian_decision_seconds_bucket", "meridian_deployment_healthy"):
        assert name in metrics, name


def test_active_health_checks_mark_dead_backends(stack: Stack) -> None:
    deadline = time.monotonic() + 10
    healthy: dict[str, bool] = {}
    while time.monotonic() < deadline:
        routing = json.loads(_http("GET", f"{stack.router.url}/routing")[2])
        healthy = {d["name"]: d["healthy"] for d in routing["models"]["nothing"]["deployments"]}
        if healthy == {"nowhere": False}:
            break
        time.sleep(0.2)
    assert healthy == {"nowhere": False}


def test_client_disconnect_cancels_the_upstream_stream(start_simulator: StartSimulator,
                                                       start_router: StartRouter) -> None:
    slow_stream = start_simulator("slow-stream", "--model", "m", "--ttft-ms", "1", "--itl-ms", "200")
    # No latency probes: the test counts the simulator's running requests exactly.
    router = start_router("disconnect-router", f"""region: test
health_check: {{latency_probe_tokens: 0}}
models:
  m:
    deployments:
{deployment_yaml("slow-stream", slow_stream.url)}
""")
    connection = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    connection.request("POST", "/v1/chat/completions", body=_chat(stream=True, max_tokens=100),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.read1(64)
    assert _sim_config(slow_stream)["running"] == 1
    connection.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _sim_config(slow_stream)["running"] != 0:
        time.sleep(0.05)
    assert _sim_config(slow_stream)["running"] == 0


def test_client_api_keys_are_required_when_configured(start_simulator: StartSimulator,
                                                      start_router: StartRouter) -> None:
    sim = start_simulator("keyed-sim", "--model", "m")
    router = start_router("keyed-router", f"""region: test
client_api_keys_env: TEST_CLIENT_KEYS
models:
  m:
    deployments:
{deployment_yaml("keyed-sim", sim.url)}
""", env={"TEST_CLIENT_KEYS": "key-one, key-two"})
    denied = openai.OpenAI(base_url=f"{router.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        denied.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    allowed = openai.OpenAI(base_url=f"{router.url}/v1", api_key="key-two", max_retries=0)
    assert allowed.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices
