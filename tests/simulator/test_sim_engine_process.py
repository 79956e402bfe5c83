"""`meridian sim-backend` behaving like an inference engine, as real processes: prompt length and context
priced per architecture, the KV cache queueing requests, the prefix cache sparing a repeated prompt's
prefill, and vLLM's figures on /metrics. Timings are compared with wide tolerances, never exactly."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.polling import wait_until
from simulator.admin_client import read_sim_config
from simulator.process import RunningSimulator, start_simulators

pytestmark = pytest.mark.integration

_TIMING = ["--model", "m", "--ttft-ms", "5", "--prefix-cache-blocks", "0", "--seed", "2"]
SIMULATORS = {
    "dense-prefill": [*_TIMING, "--itl-ms", "0", "--prefill-ms-per-1k", "20"],
    "linear-prefill": [*_TIMING, "--itl-ms", "0", "--prefill-ms-per-1k", "20", "--profile", "linear-attention"],
    "dense-decode": [*_TIMING, "--itl-ms", "20", "--prefill-ms-per-1k", "0"],
    "linear-decode": [*_TIMING, "--itl-ms", "20", "--prefill-ms-per-1k", "0", "--profile", "linear-attention"],
    "kv": ["--model", "m", "--ttft-ms", "1", "--itl-ms", "50", "--kv-cache-tokens", "1000", "--capacity", "8",
           "--prefix-cache-blocks", "0"],
    "prefix": ["--model", "m", "--ttft-ms", "5", "--itl-ms", "1", "--prefill-ms-per-1k", "50", "--seed", "4"],
}


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningSimulator]]:
    started = start_simulators(SIMULATORS, tmp_path_factory.mktemp("engine-sims"))
    yield started
    for sim in started.values():
        sim.stop()


def _chat(content: str, **extra: Any) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], **extra}).encode()


def _post_s(sim: RunningSimulator, body: bytes) -> float:
    """Seconds until a whole (non-streamed) answer is back."""
    request = urllib.request.Request(f"{sim.base_url}/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        response.read()
    return time.monotonic() - started


def test_longer_prompts_take_longer_and_full_attention_grows_faster(sims: dict[str, RunningSimulator]) -> None:
    short, long_ = "x" * 400, "x" * 80_000  # 100 and 20,000 prompt tokens
    ttft = {name: (_post_s(sims[name], _chat(short, max_tokens=1)), _post_s(sims[name], _chat(long_, max_tokens=1)))
            for name in ("dense-prefill", "linear-prefill")}
    for name, (at_short, at_long) in ttft.items():
        assert at_short < 0.15 and at_long > 0.3, (name, ttft)
    # 20 ms per 1k tokens: linear 400 ms for 20k tokens, dense 1.6 times that (0.03 per 1k of quadratic growth).
    assert ttft["dense-prefill"][1] > 1.3 * ttft["linear-prefill"][1], ttft


def _stream_gaps(sim: RunningSimulator, content: str, tokens: int) -> list[float]:
    async def run() -> list[float]:
        arrivals: list[float] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(f"{sim.base_url}/chat/completions",
                                    data=_chat(content, max_tokens=tokens, stream=True)) as response:
                assert response.status == 200
                async for line in response.content:
                    if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                        arrivals.append(time.monotonic())
        assert len(arrivals) == tokens
        return [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]

    return asyncio.run(run())


def test_decoding_slows_with_context_for_dense_and_stays_flat_for_linear_attention(
        sims: dict[str, RunningSimulator]) -> None:
    short, long_ = "x" * 40, "x" * 200_000  # 10 and 50,000 tokens of context
    median = {(name, size): statistics.median(_stream_gaps(sims[name], text, 8))
              for name in ("dense-decode", "linear-decode") for size, text in (("short", short), ("long", long_))}
    # dense: 1 + 0.02 * 50 = twice the inter-token latency at 50k tokens of context; linear attention: flat.
    assert median[("dense-decode", "long")] > 1.5 * median[("dense-decode", "short")], median
    assert median[("linear-decode", "long")] < 1.3 * median[("linear-decode", "short")], median


def test_the_kv_cache_makes_a_request_wait_and_admits_it_when_space_frees(sims: dict[str, RunningSimulator]) -> None:
    kv = sims["kv"]  # 1000 KV tokens; each request below reserves 400 prompt + 10 output tokens
    holder_body = _chat("k" * 1600, max_tokens=10, stream=True)

    async def run() -> tuple[dict[str, Any], dict[str, Any], str, float]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async def config() -> dict[str, Any]:
                async with session.get(f"{kv.url}/sim/config") as response:
                    return dict(await response.json())

            async def until(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
                for _ in range(250):
                    view = await config()
                    if check(view):
                        return view
                    await asyncio.sleep(0.02)
                raise AssertionError(f"never reached: {view}")

            async def stream() -> None:
                async with session.post(f"{kv.base_url}/chat/completions", data=holder_body) as response:
                    assert response.status == 200
                    await response.read()

            async def timed() -> float:
                started = time.monotonic()
                async with session.post(f"{kv.base_url}/chat/completions",
                                        data=_chat("k" * 1600, max_tokens=10)) as response:
                    assert response.status == 200
                    await response.read()
                return time.monotonic() - started

            holders = [asyncio.create_task(stream()) for _ in range(2)]
            await until(lambda v: v["running"] == 2)
            cancelled = asyncio.create_task(stream())
            busy = await until(lambda v: v["waiting"] == 1)
            async with session.get(f"{kv.url}/metrics") as response:
                metrics = await response.text()
            cancelled.cancel()  # the client goes away while waiting for KV space
            after_cancel = await until(lambda v: v["waiting"] == 0)
            waited = await timed()  # must wait for a holder to finish (10 tokens at 50 ms)
            await asyncio.gather(*holders)
            return busy, after_cancel, metrics, waited

    busy, after_cancel, metrics, waited = asyncio.run(run())
    assert (busy["running"], busy["kv_cache_reserved_tokens"]) == (2, 820)
    assert busy["kv_cache_usage"] == pytest.approx(0.82)
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    assert samples["vllm:num_requests_waiting"] == 1 and samples["vllm:kv_cache_usage_perc"] == pytest.approx(0.82)
    assert samples["vllm:gpu_cache_usage_perc"] == pytest.approx(0.82)
    # Leaving the queue released nothing it did not hold.
    assert (after_cancel["running"], after_cancel["kv_cache_reserved_tokens"]) == (2, 820)
    assert waited > 0.2
    assert wait_until(lambda: read_sim_config(kv.url)["kv_cache_reserved_tokens"] == 0)
    final = read_sim_config(kv.url)
    assert (final["running"], final["waiting"], final["cancelled"], final["served"]) == (0, 0, 1, 3)


def test_a_repeated_prefix_is_not_prefilled_again_and_counts_as_hits(sims: dict[str, RunningSimulator]) -> None:
    prefix = sims["prefix"]
    before = read_sim_config(prefix.url)
    unique = os.urandom(8).hex()
    prompt = (unique + "y" * 32_000)[:32_000]  # 8000 tokens: 50 ms per 1k, ~0.5 s to prefill
    first = _post_s(prefix, _chat(prompt, max_tokens=1))
    second = _post_s(prefix, _chat(prompt, max_tokens=1))
    assert first > 0.3 and second < first / 3, (first, second)
    after = read_sim_config(prefix.url)
    assert after["prefix_cache_queries"] - before["prefix_cache_queries"] == 16_000
    assert after["prefix_cache_hits"] - before["prefix_cache_hits"] == 7999  # all but the last token
    assert after["prefix_cache_blocks_used"] >= 125


def test_metrics_expose_vllms_engine_figures(sims: dict[str, RunningSimulator]) -> None:
    prefix = sims["prefix"]
    _post_s(prefix, _chat("hello there", max_tokens=3))
    _post_s(prefix, _chat("hello there", max_tokens=4, stream=True))
    with urllib.request.urlopen(f"{prefix.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {"vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge",
                "vllm:kv_cache_usage_perc": "gauge", "vllm:gpu_cache_usage_perc": "gauge",
                "vllm:time_to_first_token_seconds": "histogram", "vllm:inter_token_latency_seconds": "histogram",
                "vllm:time_per_output_token_seconds": "histogram",
                "vllm:e2e_request_latency_seconds": "histogram", "vllm:prompt_tokens": "counter",
                "vllm:generation_tokens": "counter", "vllm:prefix_cache_hits": "counter",
                "vllm:prefix_cache_queries": "counter", "vllm:request_success": "counter"}
    for name, kind in expected.items():
        assert name in families and families[name].type == kind, name
    for counter in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:prefix_cache_hits_total",
                    "vllm:prefix_cache_queries_total"):
        assert f"\n{counter}{{model_name=\"m\"}}" in text, counter
    samples = {s.name: s.value for f in families.values() for s in f.samples}
    served = read_sim_config(prefix.url)["served"]
    assert samples["vllm:e2e_request_latency_seconds_count"] == served
    assert samples["vllm:time_to_first_token_seconds_count"] == served
    assert samples["vllm:generation_tokens_total"] >= 7 and samples["vllm:inter_token_latency_seconds_count"] >= 5
