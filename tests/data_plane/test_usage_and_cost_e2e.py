"""Usage and cost end to end, with real simulators and a real router driven by the `openai` SDK: a stream's usage
is the backend's (asked for, and kept from a client that did not ask), every whole answer says its cost, a
client's cost is counted under its key's digest, requests are kept from context windows they cannot fit, and
/v1/models says each model's window and prices. Answers are hundreds of tokens long, as real ones are."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meridian_common.service_process import ServiceProcess
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

CLIENT_KEY = "sk-client-usage-4d1e"
CLIENT = "key-" + hashlib.sha256(CLIENT_KEY.encode()).hexdigest()[:16]
PROSE = "The quick brown fox jumps over the lazy dog near the riverbank. "  # 64 characters: 16 tokens


@dataclass
class Stack:
    router: ServiceProcess

    @property
    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.router.url}/v1", api_key=CLIENT_KEY, max_retries=0)

    def metric(self, name: str, **labels: str) -> float:
        text = _http("GET", f"{self.router.url}/metrics")[2].decode()
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == name and labels.items() <= sample.labels.items())


def _config(one: str, two: str) -> str:
    return f"""region: test
listen: {{host: 127.0.0.1, port: 0}}
client_api_keys_env: TEST_CLIENT_KEYS
health_check: {{interval_s: 0.5, timeout_s: 0.5, healthy_after: 1, unhealthy_after: 3, latency_probe_tokens: 0}}
models:
  m:
    deployments:
{deployment_yaml("priced", one, cost_in=0.5, cost_out=1.5, extra="context_window: 32768")}
  windows:
    policy: cost-first
    deployments:
{deployment_yaml("small", one, cost_in=0.1, cost_out=0.2, extra="context_window: 2048")}
{deployment_yaml("large", two, cost_in=1.0, cost_out=3.0, extra="context_window: 32768")}
  unbounded:
    deployments:
{deployment_yaml("anything", two)}
"""


@pytest.fixture(scope="module")
def stack(start_simulator: StartSimulator, start_router: StartRouter) -> Stack:
    one = start_simulator("one", "--model", "m", "--ttft-ms", "5", "--itl-ms", "1", "--seed", "1")
    two = start_simulator("two", "--model", "m", "--ttft-ms", "5", "--itl-ms", "1", "--seed", "2")
    return Stack(start_router("router", _config(one.url, two.url), env={"TEST_CLIENT_KEYS": CLIENT_KEY}))


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _prompt(tokens: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": (PROSE * (tokens // 16 + 1))[:tokens * 4]}]


def _tokens(stack: Stack, source: str) -> float:
    return stack.metric("meridian_tokens_total", model="m", deployment="priced", kind="output", source=source)


def test_a_stream_without_include_usage_gets_no_usage_chunk_and_is_counted_as_reported(stack: Stack) -> None:
    reported, estimated = _tokens(stack, "reported"), _tokens(stack, "estimated")
    chunks = list(stack.client.chat.completions.create(model="m", messages=_prompt(200), max_tokens=300,
                                                       stream=True))
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert sum(1 for c in chunks if c.choices[0].delta.content) == 300
    assert _tokens(stack, "reported") - reported == 300
    assert _tokens(stack, "estimated") == estimated


def test_a_stream_with_include_usage_gets_exactly_one_usage_chunk(stack: Stack) -> None:
    body = json.dumps({"model": "m", "messages": _prompt(200), "max_tokens": 250, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    status, _, raw = _http("POST", f"{stack.router.url}/v1/chat/completions", body,
                           {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"})
    assert status == 200
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    assert events[-1] == b"data: [DONE]"
    usages = [json.loads(e[len(b"data: "):])["usage"] for e in events[:-1] if b'"usage":{' in e]
    assert len(usages) == 1 and usages[0]["completion_tokens"] == 250


def test_a_whole_answer_says_its_cost_and_the_client_counter_counts_it(stack: Stack) -> None:
    before = stack.metric("meridian_client_cost_usd_total", model="m", client=CLIENT)
    raw = stack.client.chat.completions.with_raw_response.create(model="m", messages=_prompt(600), max_tokens=400)
    usage = raw.parse().usage
    assert usage is not None and usage.completion_tokens == 400
    cost = (usage.prompt_tokens * 0.5 + usage.completion_tokens * 1.5) / 1e6
    header = raw.headers["x-meridian-cost-usd"]
    assert "e" not in header and float(header) == pytest.approx(cost)
    assert stack.metric("meridian_client_cost_usd_total", model="m", client=CLIENT) - before == pytest.approx(cost)
    assert stack.metric("meridian_client_cost_usd_total", client="anonymous") == 0


@pytest.mark.parametrize(("prompt_tokens", "max_tokens", "served"), [
    (1200, 300, "small"),  # fits 2048: the cheaper one
    (1200, None, "small"),  # no max_tokens: the typical answer length excludes nothing
    (1200, 1000, "large"),  # 2200 > 2048
    (3000, 200, "large"),
])
def test_a_request_goes_only_where_it_fits(stack: Stack, prompt_tokens: int, max_tokens: int | None,
                                           served: str) -> None:
    extra: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    raw = stack.client.chat.completions.with_raw_response.create(model="windows", messages=_prompt(prompt_tokens),
                                                                 **extra)
    assert raw.headers["x-meridian-backend"] == served


def test_a_request_over_every_window_is_refused_400_context_length_exceeded(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.chat.completions.create(model="windows", messages=_prompt(40_000), max_tokens=500)
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert "maximum context length is 32768 tokens" in error["message"]
    assert "about 40500 tokens (40000 in the messages, 500 in the completion" in error["message"]


def test_models_show_windows_and_price_ranges(stack: Stack) -> None:
    listed = {model.id: model.model_dump() for model in stack.client.models.list()}
    assert listed["windows"]["context_window"] == 32768
    assert listed["windows"]["pricing"] == {"input_per_1m": {"min": 0.1, "max": 1.0},
                                            "output_per_1m": {"min": 0.2, "max": 3.0}, "currency": "USD"}
    assert listed["unbounded"]["context_window"] is None
    one = stack.client.models.retrieve("m").model_dump()
    assert (one["id"], one["object"], one["owned_by"], one["context_window"]) == ("m", "model", "meridian", 32768)
    with pytest.raises(openai.NotFoundError):
        stack.client.models.retrieve("no-such-model")
