"""Mid-stream failover end to end, on real simulator, Toxiproxy and router processes and the `openai` SDK: a
deployment whose link a `limit_data` toxic closes after 4 KB, and a healthy one direct. Every stream, sync and
async, comes whole (the tokens asked for, one finish reason) and its text continuous across the cut (the
simulator's text is a deterministic walk: each word follows from the one before); where no deployment is left
the stream ends with an error event and no [DONE]; a whole answer cut mid-body is retried elsewhere; a server
that continues only as a prefill server does takes the continuation once its deployment says so; and the client
is charged every token it got, cut attempts included.

The load is the realistic workload's (answers of hundreds of tokens, its prompts), every request streamed and
capped with max_tokens so that "whole" is exact; the non-streamed test sends its answers whole by design."""

from __future__ import annotations

import asyncio
import json
import random
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from meridian_common.service_process import ServiceProcess
from meridian_common.workload import REALISTIC, chat_body, draw
from regions.toxiproxy.launcher import RunningToxiproxy, start_toxiproxy
from simulator.admin_client import change_sim_config
from simulator.tokens import VOCABULARY, continuation_start
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

STREAMED = REALISTIC.model_copy(update={"stream_share": 1.0, "max_tokens_share": 1.0})
CUT_AFTER_BYTES = 4096
# Deployment a is the cheapest, so cost-first sends every request there first; its breaker and health are set
# never to open on these few cuts, so that each stream meets the cut rather than only the first few.
CONFIG = """region: test
health_check: {{interval_s: 5, timeout_s: 2, unhealthy_after: 1000, latency_probe_tokens: 0}}
max_attempts: 3
models:
  m:
    policy: cost-first
    breaker: {{consecutive_failures: 1000, min_requests: 1000, error_rate_threshold: 1.0}}
    deployments:
{deployments}
"""
SIM = ("--model", "m", "--ttft-ms", "5", "--itl-ms", "1")


@pytest.fixture(scope="module")
def toxiproxy(workdir: Path) -> Iterator[RunningToxiproxy]:
    running = start_toxiproxy(workdir / "toxiproxy.log")
    try:
        yield running
    finally:
        running.stop()


def _api(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.loads(response.read()))


def _cut_link(toxiproxy: RunningToxiproxy, name: str, upstream: ServiceProcess, cut_after_bytes: int) -> str:
    """A proxy to `upstream` whose every connection closes after `cut_after_bytes` bytes towards the router;
    returns its URL."""
    port = upstream.url.rsplit(":", 1)[1]
    proxy = _api(toxiproxy.url, "/proxies", {"name": name, "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{port}"})
    _api(toxiproxy.url, f"/proxies/{name}/toxics", {"name": "cut", "type": "limit_data", "stream": "downstream",
                                                     "attributes": {"bytes": cut_after_bytes}})
    return f"http://{proxy['listen']}"


def _router(start_router: StartRouter, name: str, cut_url: str, healthy_url: str) -> ServiceProcess:
    deployments = "\n".join((deployment_yaml("a", cut_url, cost_in=0.01, cost_out=0.01),
                             deployment_yaml("b", healthy_url, cost_in=1.0, cost_out=1.0)))
    return start_router(name, CONFIG.format(deployments=deployments))


@pytest.fixture(scope="module")
def router(start_simulator: StartSimulator, start_router: StartRouter, toxiproxy: RunningToxiproxy) -> ServiceProcess:
    behind = start_simulator("behind-cut-link", *SIM)
    healthy = start_simulator("healthy", *SIM)
    return _router(start_router, "resume-router", _cut_link(toxiproxy, "resume_a", behind, CUT_AFTER_BYTES),
                   healthy.url)


def _requests(count: int, seed: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [chat_body("m", draw(STREAMED, rng), rng) for _ in range(count)]


def _assert_whole_and_continuous(body: dict[str, Any], text: str, finish_reasons: list[str]) -> None:
    words = text.split(" ")[1:]
    assert len(words) == body["max_tokens"], (len(words), body["max_tokens"])
    assert finish_reasons == ["length"]
    for before, after in zip(words, words[1:], strict=False):
        assert _next_word(before) == after, (before, after, text)


def _next_word(word: str) -> str:
    """The word the simulator's walk puts after `word`."""
    following = continuation_start(" " + word)
    assert following is not None, word
    return VOCABULARY[following].strip()


def _metric(router: ServiceProcess, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"{router.url}/metrics", timeout=5).read().decode()
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(label in line for label in wanted))


def _resumes_in_log(router: ServiceProcess) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in router.log_path.read_text().splitlines()
            if " stream_resumed " in line]


def test_sync_streams_over_a_cut_link_come_whole_and_continuous(router: ServiceProcess) -> None:
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=30)
    cut_before = _metric(router, "meridian_stream_resumes_total", deployment="a")
    for body in _requests(4, "sync"):
        body["max_tokens"] = max(body["max_tokens"], 60)  # over 4 KB of events: every one meets the cut
        options = {k: v for k, v in body.items() if k not in ("model", "messages")}
        texts, finishes, usage = [], [], None
        with client.chat.completions.create(model="m", messages=body["messages"], **options) as stream:
            for chunk in stream:  # the SDK raises on an error event or a half event
                for choice in chunk.choices:
                    texts.append(choice.delta.content or "")
                    if choice.finish_reason:
                        finishes.append(choice.finish_reason)
                usage = chunk.usage or usage
        _assert_whole_and_continuous(body, "".join(texts), finishes)
        assert usage is not None and usage.completion_tokens == body["max_tokens"]
    assert _metric(router, "meridian_stream_resumes_total", deployment="a") >= cut_before + 4
    resumed = _resumes_in_log(router)
    assert resumed and {(r["from_deployment"], r["to_deployment"]) for r in resumed} == {("a", "b")}
    assert all(float(r["after_ms"]) < 50 for r in resumed), resumed
    found = json.loads(urllib.request.urlopen(f"{router.url}/routing", timeout=5).read())
    stats = {d["name"]: d["stats"] for d in found["models"]["m"]["deployments"]}
    assert stats["a"]["errors"] >= 4  # each cut is a failure of the deployment that cut


def test_async_streams_over_a_cut_link_come_whole_and_continuous(router: ServiceProcess) -> None:
    async def one(client: openai.AsyncOpenAI, body: dict[str, Any]) -> tuple[str, list[str]]:
        options = {k: v for k, v in body.items() if k not in ("model", "messages")}
        texts, finishes = [], []
        stream = await client.chat.completions.create(model="m", messages=body["messages"], **options)
        async for chunk in stream:
            for choice in chunk.choices:
                texts.append(choice.delta.content or "")
                if choice.finish_reason:
                    finishes.append(choice.finish_reason)
        return "".join(texts), finishes

    async def run(bodies: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
        client = openai.AsyncOpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=30)
        try:
            return await asyncio.gather(*(one(client, body) for body in bodies))
        finally:
            await client.close()

    bodies = _requests(8, "async")
    for body, (text, finishes) in zip(bodies, asyncio.run(run(bodies)), strict=True):
        _assert_whole_and_continuous(body, text, finishes)


def test_with_no_deployment_left_the_stream_ends_with_an_error_event_and_no_done(
        start_simulator: StartSimulator, start_router: StartRouter) -> None:
    first = start_simulator("cuts-first", *SIM, "--cut-after-tokens", "20")
    second = start_simulator("cuts-second", *SIM, "--cut-after-tokens", "10")
    router = _router(start_router, "nothing-left-router", first.url, second.url)
    (body,) = _requests(1, "nothing-left")
    body["max_tokens"] = 100

    async def read() -> bytes:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async with session.post(f"{router.url}/v1/chat/completions", json=body) as response:
                assert response.status == 200
                return await response.read()

    received = asyncio.run(read())
    events = [e for e in received.split(b"\n\n") if e]
    assert b"data: [DONE]" not in events
    assert events[-1].startswith(b'data: {"error"')
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "stream_broken" and "no deployment was left" in error["message"]
    assert b": meridian resumed on b after 20 tokens from a (closed)" in events
    text = "".join(json.loads(e.removeprefix(b"data: "))["choices"][0]["delta"].get("content") or ""
                   for e in events if e.startswith(b"data: {\"id\""))
    assert len(text.split(" ")[1:]) == 30  # 20 from a, 10 from b: every token sent is whole, none twice
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=20)
    options = {k: v for k, v in body.items() if k not in ("model", "messages")}
    with pytest.raises(openai.APIError, match="could not be finished"):
        for _ in client.chat.completions.create(model="m", messages=body["messages"], **options):
            pass


def test_a_whole_answer_cut_mid_body_is_retried_elsewhere(start_simulator: StartSimulator, start_router: StartRouter,
                                                          toxiproxy: RunningToxiproxy) -> None:
    behind = start_simulator("whole-behind-cut-link", *SIM)
    healthy = start_simulator("whole-healthy", *SIM)
    router = _router(start_router, "whole-router", _cut_link(toxiproxy, "whole_a", behind, 1500), healthy.url)
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=30)
    rng = random.Random("whole")
    for _ in range(3):
        shape = draw(REALISTIC.model_copy(update={"stream_share": 0.0, "max_tokens_share": 1.0}), rng)
        body = chat_body("m", shape, rng)
        body["max_tokens"] = max(body["max_tokens"], 400)  # a body well past the 1,500 bytes the link lets through
        raw = client.chat.completions.with_raw_response.create(model="m", messages=body["messages"],
                                                               max_tokens=body["max_tokens"])
        answer = raw.parse()
        assert raw.headers["x-meridian-backend"] == "b" and raw.headers["x-meridian-attempts"] == "2"
        assert answer.usage is not None and answer.usage.completion_tokens == body["max_tokens"]
        assert len((answer.choices[0].message.content or "").split(" ")[1:]) == body["max_tokens"]


def test_a_stream_that_stalls_is_continued_elsewhere(start_simulator: StartSimulator,
                                                     start_router: StartRouter) -> None:
    stalling = start_simulator("stalls", "--model", "m", "--ttft-ms", "5", "--itl-ms", "5")
    healthy = start_simulator("stall-healthy", *SIM)
    deployments = "\n".join((deployment_yaml("a", stalling.url, cost_in=0.01, cost_out=0.01),
                             deployment_yaml("b", healthy.url, cost_in=1.0, cost_out=1.0)))
    router = start_router("stall-router", CONFIG.format(deployments=deployments)
                          + "stream_stall: {tpot_multiple: 50, floor_s: 0.3, cap_s: 0.5}\n")
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=30)
    (body,) = _requests(1, "stall")
    body["max_tokens"] = 120
    options = {k: v for k, v in body.items() if k not in ("model", "messages")}
    texts, finishes = [], []
    try:
        with client.chat.completions.create(model="m", messages=body["messages"], **options) as stream:
            for chunk in stream:
                for choice in chunk.choices:
                    texts.append(choice.delta.content or "")
                    if choice.finish_reason:
                        finishes.append(choice.finish_reason)
                if len(texts) == 10:  # a backend that stops generating mid-answer, its connection open
                    change_sim_config(stalling.url, itl_ms=60_000)
    finally:
        change_sim_config(stalling.url, itl_ms=5)
    _assert_whole_and_continuous(body, "".join(texts), finishes)
    (resumed,) = _resumes_in_log(router)
    assert (resumed["from_deployment"], resumed["reason"]) == ("a", "stalled")


def test_a_mixed_fleet_continues_on_a_prefill_server_that_says_so(start_simulator: StartSimulator,
                                                                  start_router: StartRouter) -> None:
    # a speaks vLLM's continuation and cuts every stream after 20 tokens; b is a server that continues a final
    # assistant message as it is and refuses vLLM's fields (400), as llama.cpp's or a strict server does.
    vllm = start_simulator("mixed-vllm", *SIM, "--cut-after-tokens", "20")
    prefill = start_simulator("mixed-prefill", *SIM, "--chat-continuation", "prefill")
    (body,) = _requests(1, "mixed")
    body["max_tokens"] = 100

    def router(name: str, b_extra: str) -> ServiceProcess:
        deployments = "\n".join((deployment_yaml("a", vllm.url, cost_in=0.01, cost_out=0.01),
                                 deployment_yaml("b", prefill.url, cost_in=1.0, cost_out=1.0, extra=b_extra)))
        return start_router(name, CONFIG.format(deployments=deployments))

    async def read(url: str) -> list[bytes]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                assert response.status == 200
                return [e for e in (await response.read()).split(b"\n\n") if e]

    def text_of(events: list[bytes]) -> tuple[str, list[str]]:
        choices = [choice for e in events if e.startswith(b'data: {"id"')
                   for choice in json.loads(e.removeprefix(b"data: "))["choices"]]
        return ("".join(c["delta"].get("content") or "" for c in choices),
                [c["finish_reason"] for c in choices if c["finish_reason"]])

    # With the router's default (vllm) for b too, b refuses the continuation: nothing is left to finish it.
    events = asyncio.run(read(router("mixed-default-router", "").url))
    assert b"data: [DONE]" not in events
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert "no deployment was left" in error["message"] and "400" in error["message"], error
    # b saying how it continues a stream: the stream comes whole and continuous.
    events = asyncio.run(read(router("mixed-prefill-router", "chat_continuation: prefill").url))
    assert events[-1] == b"data: [DONE]"
    assert b": meridian resumed on b after 20 tokens from a (closed)" in events
    _assert_whole_and_continuous(body, *text_of(events))


def test_the_client_is_charged_every_token_of_a_resumed_stream(start_simulator: StartSimulator,
                                                               start_router: StartRouter) -> None:
    # a cuts every stream after 20 tokens and b finishes it; input costs the same on both, b's output twice a's,
    # so what the client owes follows from the usage chunk and the 20 tokens a delivered.
    first = start_simulator("charged-first", *SIM, "--cut-after-tokens", "20")
    second = start_simulator("charged-second", *SIM)
    deployments = "\n".join((deployment_yaml("a", first.url, cost_in=1.0, cost_out=1.0),
                             deployment_yaml("b", second.url, cost_in=1.0, cost_out=2.0)))
    router = start_router("charged-router", CONFIG.format(deployments=deployments))
    (body,) = _requests(1, "charged")
    body.update(max_tokens=100, stream_options={"include_usage": True})

    async def read() -> list[bytes]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async with session.post(f"{router.url}/v1/chat/completions", json=body) as response:
                assert response.status == 200
                return [e for e in (await response.read()).split(b"\n\n") if e]

    events = asyncio.run(read())
    assert b": meridian resumed on b after 20 tokens from a (closed)" in events
    (usage,) = [chunk["usage"] for chunk in (json.loads(e.removeprefix(b"data: ")) for e in events
                                             if e.startswith(b'data: {"id"')) if chunk.get("usage")]
    assert usage["completion_tokens"] == 100
    owed = (usage["prompt_tokens"] * 1.0 + 20 * 1.0 + (usage["completion_tokens"] - 20) * 2.0) / 1e6
    assert _metric(router, "meridian_client_cost_usd_total") == pytest.approx(owed, rel=1e-6)
    # A stream that cannot be finished is charged what the client got: b cut as well, nothing left.
    change_sim_config(second.url, cut_after_tokens=10)
    events = asyncio.run(read())
    assert events[-1].startswith(b'data: {"error"')
    got = sum(1 for e in events if e.startswith(b'data: {"id"')
              for choice in json.loads(e.removeprefix(b"data: "))["choices"] if choice["delta"].get("content"))
    assert got == 30
    charged = _metric(router, "meridian_client_cost_usd_total") - owed
    assert charged > (20 * 1.0 + 10 * 2.0) / 1e6, charged  # the two attempts' prompts on top of the 30 tokens
