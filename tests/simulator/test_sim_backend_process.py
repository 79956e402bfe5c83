"""`meridian sim-backend` as a real process on an ephemeral 127.0.0.1 port, driven by the official `openai`
SDK (sync, async, streaming) and by raw HTTP for errors, queueing, metrics and disconnects."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from fixtures.polling import wait_until
from simulator.admin_client import SimulatorAdminError, change_sim_config, read_sim_config
from simulator.process import RunningSimulator, ServiceStartError, start_simulator, start_simulators
from simulator.tokens import continuation_start, generated_tokens

pytestmark = pytest.mark.integration

SIMULATORS = {
    "main": ["--model", "m", "--ttft-ms", "1", "--itl-ms", "1", "--seed", "1"],
    "ollama": ["--model", "m", "--ttft-ms", "1", "--itl-ms", "0", "--usage-format", "ollama"],
    "silent": ["--model", "m", "--ttft-ms", "1", "--itl-ms", "0", "--usage-format", "none"],
    "queue": ["--model", "m", "--ttft-ms", "300", "--itl-ms", "0", "--capacity", "2"],
    "broken": ["--model", "m", "--ttft-ms", "1", "--error-rate", "1.0"],
    "paced": ["--model", "m", "--ttft-ms", "1", "--itl-ms", "100", "--capacity", "1"],
    "fast": ["--model", "m", "--ttft-ms", "0", "--itl-ms", "0", "--capacity", "1000"],
    "linear": ["--model", "m", "--ttft-ms", "20", "--itl-ms", "0", "--capacity", "2", "--profile",
               "linear-attention", "--seed", "3"],
    "spread": ["--model", "m", "--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", "40", "--output-tokens-sigma",
               "0.8", "--seed", "5"],
    "cutting": ["--model", "m", "--ttft-ms", "1", "--itl-ms", "1", "--cut-after-tokens", "5"],
}


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningSimulator]]:
    started = start_simulators(SIMULATORS, tmp_path_factory.mktemp("sims"))
    yield started
    for sim in started.values():
        sim.stop()
        assert not sim.alive()


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _chat(model: str = "m", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}).encode()


def _sse_payloads(raw: bytes) -> list[Any]:
    events = [line[6:] for line in raw.split(b"\n\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    return [json.loads(e) for e in events[:-1]]


def _content_chunks(chunks: list[Any]) -> int:
    return sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))


def test_sync_sdk_chat_completions_and_models(sims: dict[str, RunningSimulator]) -> None:
    client = openai.OpenAI(base_url=sims["main"].base_url, api_key="unused", max_retries=0)
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=5)
    assert chat.object == "chat.completion" and chat.model == "m" and chat.id.startswith("chatcmpl-")
    assert chat.choices[0].message.content and chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (2, 5)
    default = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert default.usage is not None and default.usage.completion_tokens == 16
    assert default.choices[0].finish_reason == "stop"
    completion = client.completions.create(model="m", prompt="Once upon a time", max_tokens=3)
    assert completion.object == "text_completion" and completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert [m.id for m in client.models.list()] == ["m"]
    assert client.models.retrieve("m").id == "m"


def test_async_sdk_streams_one_token_per_chunk_with_usage(sims: dict[str, RunningSimulator]) -> None:
    async def run() -> tuple[list[str], Any, list[str], Any]:
        client = openai.AsyncOpenAI(base_url=sims["main"].base_url, api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "b"}], max_tokens=8, stream=True,
            stream_options={"include_usage": True})
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        texts, text_usage = [], None
        completions = await client.completions.create(model="m", prompt="p", max_tokens=4, stream=True,
                                                      stream_options={"include_usage": True})
        async for part in completions:
            if part.choices and part.choices[0].text:
                texts.append(part.choices[0].text)
            if part.usage is not None:
                text_usage = part.usage
        await client.close()
        return pieces, usage, texts, text_usage

    pieces, usage, texts, text_usage = asyncio.run(run())
    assert len(pieces) == 8 and usage is not None and usage.completion_tokens == 8
    assert len(texts) == 4 and text_usage is not None and text_usage.completion_tokens == 4


def test_sync_stream_without_usage_ends_with_finish_reason(sims: dict[str, RunningSimulator]) -> None:
    client = openai.OpenAI(base_url=sims["main"].base_url, api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}],
                                                 stream=True))
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 16
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in chunks)


def test_embeddings_are_deterministic_in_both_encodings(sims: dict[str, RunningSimulator]) -> None:
    client = openai.OpenAI(base_url=sims["main"].base_url, api_key="unused", max_retries=0)
    default = client.embeddings.create(model="m", input=["a", "b"])  # the SDK asks for base64 and decodes
    floats = client.embeddings.create(model="m", input=["a", "b"], encoding_format="float", dimensions=64)
    single = client.embeddings.create(model="m", input="a", encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 64
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)
    assert single.data[0].embedding == floats.data[0].embedding != floats.data[1].embedding
    assert default.usage.prompt_tokens == 2


@pytest.mark.parametrize(
    ("name", "present", "absent"),
    [("main", {"usage"}, {"eval_count"}), ("ollama", {"prompt_eval_count", "eval_count"}, {"usage"}),
     ("silent", set(), {"usage", "eval_count", "prompt_eval_count"})],
)
def test_usage_formats(sims: dict[str, RunningSimulator], name: str, present: set[str],
                       absent: set[str]) -> None:
    url = f"{sims[name].base_url}/chat/completions"
    status, raw = _http("POST", url, _chat(max_tokens=4))
    body = json.loads(raw)
    assert status == 200 and present <= body.keys() and not absent & body.keys()
    if name == "ollama":
        assert body["eval_count"] == 4
    status, raw = _http("POST", url, _chat(max_tokens=4, stream=True, stream_options={"include_usage": True}))
    chunks = _sse_payloads(raw)
    assert status == 200 and _content_chunks(chunks) == 4
    final = chunks[-1]
    if present:
        assert final["choices"] == [] and present <= final.keys()
    else:
        assert final["choices"] and all(not absent & c.keys() for c in chunks)


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "param"),
    [
        ("/v1/chat/completions", b"{not json", 400, "invalid_json", None),
        ("/v1/chat/completions", json.dumps({"model": "m"}).encode(), 400, "missing_required_parameter",
         "messages"),
        ("/v1/completions", json.dumps({"model": "m"}).encode(), 400, "missing_required_parameter", "prompt"),
        ("/v1/embeddings", json.dumps({"model": "m"}).encode(), 400, "missing_required_parameter", "input"),
        ("/v1/chat/completions", _chat("other"), 404, "model_not_found", "model"),
        ("/v1/chat/completions", _chat(max_tokens=-1), 400, "invalid_value", "max_tokens"),
        ("/v1/nothing-here", b"{}", 404, "not_found", None),
    ],
)
def test_bad_input_gets_openai_errors(sims: dict[str, RunningSimulator], path: str, body: bytes, status: int,
                                      code: str, param: str | None) -> None:
    got, raw = _http("POST", sims["main"].url + path, body)
    error = json.loads(raw)["error"]
    assert got == status and set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param) and error["message"]


def test_sdk_raises_the_matching_errors(sims: dict[str, RunningSimulator]) -> None:
    client = openai.OpenAI(base_url=sims["main"].base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[])
    assert read_sim_config(sims["main"].url)["rejected"] >= 2


def test_error_rate_one_fails_every_request_until_changed(sims: dict[str, RunningSimulator]) -> None:
    broken = sims["broken"]
    client = openai.OpenAI(base_url=broken.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    status, raw = _http("POST", f"{broken.base_url}/chat/completions", _chat(stream=True))
    assert status == 500 and json.loads(raw)["error"]["code"] == "simulated_error"
    assert read_sim_config(broken.url)["errors"] == 2
    try:
        assert change_sim_config(broken.url, error_rate=0.0)["error_rate"] == 0.0
        assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices
    finally:
        change_sim_config(broken.url, error_rate=1.0)
    assert read_sim_config(broken.url)["served"] == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [(b"[]", None), (b'{"capacity": 0}', "capacity"), (b'{"error_rate": "high"}', "error_rate"),
     (b'{"profile": "rnn"}', "profile"), (b'{"model": "x"}', "model"), (b"{oops", None)],
)
def test_admin_endpoint_refuses_bad_settings(sims: dict[str, RunningSimulator], body: bytes,
                                             param: str | None) -> None:
    before = read_sim_config(sims["main"].url)
    status, raw = _http("POST", f"{sims['main'].url}/sim/config", body)
    assert status == 400 and json.loads(raw)["error"]["param"] == param
    after = read_sim_config(sims["main"].url)
    assert {k: after[k] for k in ("capacity", "error_rate", "profile")} == {
        k: before[k] for k in ("capacity", "error_rate", "profile")}
    with pytest.raises(SimulatorAdminError, match="capacity"):
        change_sim_config(sims["main"].url, capacity=-1)


def test_admin_endpoint_reports_settings_and_counts(sims: dict[str, RunningSimulator]) -> None:
    view = read_sim_config(sims["paced"].url)
    assert {"model", "profile", "ttft_ms", "itl_ms", "capacity", "error_rate", "usage_format",
            "output_tokens", "output_tokens_sigma", "running", "waiting", "served", "errors", "rejected", "cancelled",
            "peak_running"} <= view.keys()
    assert (view["model"], view["capacity"], view["itl_ms"]) == ("m", 1, 100.0)


def test_capacity_queues_the_excess_in_order_and_is_never_exceeded(sims: dict[str, RunningSimulator]) -> None:
    queue = sims["queue"]

    async def run() -> tuple[list[float], dict[str, Any], str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async def one() -> float:
                started = time.monotonic()
                async with session.post(f"{queue.base_url}/chat/completions", data=_chat(max_tokens=2),
                                        headers={"Content-Type": "application/json"}) as response:
                    assert response.status == 200
                    await response.read()
                return time.monotonic() - started

            tasks = [asyncio.create_task(one()) for _ in range(6)]
            view: dict[str, Any] = {}
            for _ in range(100):  # at most ~2 s, far longer than six requests take to arrive
                async with session.get(f"{queue.url}/sim/config") as response:
                    view = await response.json()
                if view["waiting"] == 4:
                    break
                await asyncio.sleep(0.02)
            async with session.get(f"{queue.url}/metrics") as response:
                metrics = await response.text()
            return sorted(await asyncio.gather(*tasks)), view, metrics

    latencies, busy, metrics = asyncio.run(run())
    assert (busy["running"], busy["waiting"]) == (2, 4)
    assert 'vllm:num_requests_running{model_name="m"} 2.0' in metrics
    assert 'vllm:num_requests_waiting{model_name="m"} 4.0' in metrics
    after = read_sim_config(queue.url)
    assert after["peak_running"] == 2 and (after["running"], after["waiting"]) == (0, 0)
    assert after["served"] == 6
    # Three waves of at least 300 ms: queueing adds to the time to first token.
    assert latencies[0] >= 0.25 and latencies[-1] >= 0.8 and latencies[-1] > 2 * latencies[0]


def test_linear_attention_falls_off_a_cliff_past_capacity(sims: dict[str, RunningSimulator]) -> None:
    linear = sims["linear"]  # capacity 2, 20 ms to the first token when not overloaded

    async def run() -> tuple[float, list[float]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async def one() -> float:
                started = time.monotonic()
                async with session.post(f"{linear.base_url}/chat/completions", data=_chat(max_tokens=1)) as r:
                    assert r.status == 200
                    await r.read()
                return time.monotonic() - started

            alone = await one()
            return alone, sorted(await asyncio.gather(*(one() for _ in range(6))))

    alone, overloaded = asyncio.run(run())
    assert alone < 0.15
    # Admitted while four wait, a request sees load 3 and a latency many times the flat one.
    assert overloaded[-1] >= 0.3 and overloaded[-1] >= 5 * overloaded[0], overloaded


def test_metrics_expose_vllm_gauges_and_a_request_counter(sims: dict[str, RunningSimulator]) -> None:
    _http("POST", f"{sims['main'].base_url}/chat/completions", _chat(max_tokens=1))
    status, raw = _http("GET", f"{sims['main'].url}/metrics")
    text = raw.decode()
    assert status == 200
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_success_total",
                 "sim_requests_total"):
        assert f"{name}{{" in text, name
    assert _http("GET", f"{sims['main'].url}/health")[0] == 200


def test_streams_are_paced_by_the_inter_token_latency(sims: dict[str, RunningSimulator]) -> None:
    client = openai.OpenAI(base_url=sims["paced"].base_url, api_key="unused", max_retries=0)
    arrivals = []
    for chunk in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                max_tokens=4, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) == 4 and all(gap >= 0.07 for gap in gaps), gaps


def test_client_disconnect_frees_the_slot_and_the_queue(sims: dict[str, RunningSimulator]) -> None:
    paced = sims["paced"]  # capacity 1, 100 ms a token
    before = read_sim_config(paced.url)
    holder = http.client.HTTPConnection("127.0.0.1", paced.port, timeout=10)
    holder.request("POST", "/v1/chat/completions", body=_chat(stream=True, max_tokens=200),
                   headers={"Content-Type": "application/json"})
    response = holder.getresponse()
    assert response.status == 200 and response.read1(64)
    assert (read_sim_config(paced.url)["running"], read_sim_config(paced.url)["streaming"]) == (1, 1)
    queued = http.client.HTTPConnection("127.0.0.1", paced.port, timeout=10)
    queued.request("POST", "/v1/chat/completions", body=_chat(stream=True, max_tokens=200),
                   headers={"Content-Type": "application/json"})
    assert wait_until(lambda: read_sim_config(paced.url)["waiting"] == 1)
    assert read_sim_config(paced.url)["streaming"] == 1  # a stream waiting for its slot is not under way
    queued.close()
    assert wait_until(lambda: read_sim_config(paced.url)["waiting"] == 0)
    holder.close()
    assert wait_until(lambda: read_sim_config(paced.url)["running"] == 0)
    after = read_sim_config(paced.url)
    assert after["streaming"] == 0
    assert after["cancelled"] - before["cancelled"] == 2 and after["served"] == before["served"]
    status, _ = _http("POST", f"{paced.base_url}/chat/completions", _chat(max_tokens=1))
    assert status == 200  # the slot really is free again


def test_zero_latency_answers_at_once(sims: dict[str, RunningSimulator]) -> None:
    fast = sims["fast"]

    async def run() -> tuple[float, bytes]:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            for _ in range(200):
                async with session.post(f"{fast.base_url}/chat/completions", data=_chat(max_tokens=16)) as r:
                    assert r.status == 200
                    await r.read()
            elapsed = time.monotonic() - started
            async with session.post(f"{fast.base_url}/chat/completions",
                                    data=_chat(max_tokens=50, stream=True)) as r:
                return elapsed, await r.read()

    elapsed, stream = asyncio.run(run())
    assert elapsed < 4.0  # 20 ms a request at worst: no sleeping anywhere on the zero-latency path
    assert _content_chunks(_sse_payloads(stream)) == 50


def test_stop_is_prompt_even_mid_stream(tmp_path: Path) -> None:
    sim = start_simulator(["--model", "m", "--ttft-ms", "1", "--itl-ms", "200"], tmp_path / "stopping.log")
    connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        connection.request("POST", "/v1/chat/completions", body=_chat(stream=True, max_tokens=500))
        assert connection.getresponse().read1(64)
        started = time.monotonic()
        sim.stop(timeout_s=5.0)
        assert time.monotonic() - started < 4.0
        assert sim.managed.process.returncode == 0  # SIGTERM was handled, not escalated to SIGKILL
        assert "listening" in sim.log_path.read_text()
    finally:
        connection.close()
        sim.kill()


def test_invalid_flags_fail_fast_with_the_flag_named(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "meridian_cli.main", "sim-backend", "--capacity", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--capacity" in result.stderr
    result = subprocess.run([sys.executable, "-m", "meridian_cli.main", "sim-backend", "--prefix-cache-blocks", "-1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--prefix-cache-blocks" in result.stderr
    result = subprocess.run([sys.executable, "-m", "meridian_cli.main", "sim-backend", "--api-key-env",
                             "MERIDIAN_TEST_UNSET_KEY"], capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in os.environ.items() if k != "MERIDIAN_TEST_UNSET_KEY"})
    assert result.returncode == 2 and "--api-key-env" in result.stderr and "MERIDIAN_TEST_UNSET_KEY" in result.stderr
    with pytest.raises(ServiceStartError, match="error-rate"):
        start_simulator(["--error-rate", "2"], tmp_path / "bad.log", timeout_s=10)


def test_natural_lengths_spread_around_output_tokens(sims: dict[str, RunningSimulator]) -> None:
    url = f"{sims['spread'].base_url}/chat/completions"
    answers = [json.loads(_http("POST", url, _chat())[1]) for _ in range(40)]
    lengths = [a["usage"]["completion_tokens"] for a in answers]
    assert {a["choices"][0]["finish_reason"] for a in answers} == {"stop"}
    assert len(set(lengths)) > 10 and min(lengths) >= 1 and 10 < sorted(lengths)[20] < 160
    capped = json.loads(_http("POST", url, _chat(max_tokens=3))[1])
    assert (capped["usage"]["completion_tokens"], capped["choices"][0]["finish_reason"]) == (3, "length")
    assert read_sim_config(sims["spread"].url)["output_tokens_sigma"] == 0.8


def test_with_an_api_key_every_v1_request_must_carry_it(tmp_path: Path) -> None:
    with start_simulator(["--model", "m", "--ttft-ms", "0", "--itl-ms", "0", "--api-key-env", "SIM_TEST_KEY"],
                         tmp_path / "keyed.log", env={"SIM_TEST_KEY": "sk-sim-secret"}) as sim:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=sim.base_url, api_key="wrong", max_retries=0).models.list()
        status, raw = _http("POST", f"{sim.base_url}/chat/completions", _chat())
        assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-sim-secret", max_retries=0)
        assert [m.id for m in client.models.list()] == ["m"]
        assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices
        assert _http("GET", f"{sim.url}/health")[0] == 200  # only /v1 asks for the key
        view = read_sim_config(sim.url)
        assert view["api_key_required"] is True and view["rejected"] == 2
        assert "sk-sim-secret" not in json.dumps(view) and "sk-sim-secret" not in sim.log_path.read_text()


def test_a_throttled_request_gets_429_with_the_retry_after_until_changed(sims: dict[str, RunningSimulator]) -> None:
    main = sims["main"]
    url = f"{main.base_url}/chat/completions"
    before = read_sim_config(main.url)["throttled"]
    try:
        change_sim_config(main.url, throttle_rate=1.0, retry_after_s=3)
        request = urllib.request.Request(url, data=_chat(), method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code == 429 and raised.value.headers["Retry-After"] == "3"
        assert json.loads(raised.value.read())["error"]["code"] == "rate_limit_exceeded"
        change_sim_config(main.url, retry_after_s=None)
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code == 429 and "Retry-After" not in raised.value.headers
    finally:
        change_sim_config(main.url, throttle_rate=0.0, retry_after_s=None)
    assert _http("POST", url, _chat())[0] == 200
    assert read_sim_config(main.url)["throttled"] == before + 2


def _raw_stream(url: str, body: dict[str, Any]) -> tuple[bytes, str | None]:
    """A stream's bytes as they came, and why reading it failed (None when it ended cleanly)."""
    async def read() -> tuple[bytes, str | None]:
        received = bytearray()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                try:
                    async for data in response.content.iter_any():
                        received += data
                except aiohttp.ClientPayloadError as error:
                    return bytes(received), type(error).__name__
        return bytes(received), None

    return asyncio.run(read())


def test_a_stream_is_cut_mid_event_and_its_text_continues_elsewhere(sims: dict[str, RunningSimulator]) -> None:
    cutting, whole = sims["cutting"], sims["main"]
    question = [{"role": "user", "content": "hello"}]
    received, error = _raw_stream(cutting.url, {"model": "m", "messages": question, "stream": True, "max_tokens": 12})
    assert error == "ClientPayloadError"  # the connection closed without the chunked body's end
    events = received.split(b"\n\n")
    assert events[-1] and not events[-1].endswith(b"}")  # half an event, then nothing
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    sent = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(chunks) == 6 and sent  # the role chunk and 5 tokens
    assert read_sim_config(cutting.url)["cut"] >= 1
    client = openai.OpenAI(base_url=whole.base_url, api_key="unused", max_retries=0)
    rest = client.chat.completions.create(
        model="m", messages=[*question, {"role": "assistant", "content": sent}], max_tokens=7,
        extra_body={"continue_final_message": True, "add_generation_prompt": False})
    # The whole answer's text is a walk on from the cut text: the 12 tokens read as one answer.
    text = sent + (rest.choices[0].message.content or "")
    words = text.split(" ")[1:]
    assert len(words) == 12
    start = continuation_start(" " + words[0])
    assert start is not None and "".join(generated_tokens(start, 11)) == "".join(" " + w for w in words[1:])


def test_a_cut_rate_of_one_cuts_every_stream_and_none_after(sims: dict[str, RunningSimulator]) -> None:
    url = sims["main"].url
    change_sim_config(url, cut_rate=1.0)
    try:
        _, error = _raw_stream(url, {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True,
                                     "max_tokens": 8})
        assert error == "ClientPayloadError"
    finally:
        change_sim_config(url, cut_rate=0.0)
    _, error = _raw_stream(url, {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True,
                                 "max_tokens": 8})
    assert error is None
