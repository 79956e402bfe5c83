"""Engine- and architecture-aware routing end to end, on real simulator and router processes: interleaved short
and long prompts each go to the architecture that serves them faster, and a backend whose engine queue grows
loses its traffic before the router has measured it slower."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import aiohttp
import pytest

from fixtures.sdk_clients import Tally, send_realistic
from meridian_common.service_process import ServiceProcess
from meridian_common.workload import REALISTIC, simulator_flags
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

# Prompts of a line or two, and long documents; answers of realistic length, half streamed.
SHORT = REALISTIC.model_copy(update={"prompt_tokens_median": 100, "prompt_tokens_sigma": 0.3,
                                     "prompt_tokens_max": 400})
LONG = REALISTIC.model_copy(update={"prompt_tokens_median": 16_000, "prompt_tokens_sigma": 0.2,
                                    "prompt_tokens_max": 32_000})


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def _router(start_router: StartRouter, name: str, policy: str, deployments: list[str]) -> ServiceProcess:
    return start_router(name, "region: test\nhealth_check: {interval_s: 1, timeout_s: 1}\nmodels:\n  m:\n"
                              f"    policy: {policy}\n    deployments:\n" + "\n".join(deployments))


def test_short_and_long_prompts_each_go_to_the_architecture_that_serves_them_faster(
        start_simulator: StartSimulator, start_router: StartRouter) -> None:
    # Dense: little fixed cost, prefill per token growing with the context. Linear attention: a larger fixed cost,
    # a cheaper prefill that does not grow. At 100 tokens dense answers first in ~25 ms against ~150; at 16k
    # tokens in ~970 ms against ~310.
    answers = simulator_flags(REALISTIC)
    dense = start_simulator("dense", "--model", "m", "--profile", "dense", "--ttft-ms", "20", "--itl-ms", "2",
                            "--prefill-ms-per-1k", "40", *answers)
    linear = start_simulator("linear", "--model", "m", "--profile", "linear-attention", "--ttft-ms", "150",
                             "--itl-ms", "2", "--prefill-ms-per-1k", "10", *answers)
    router = _router(start_router, "architecture-router", "latency-first", [
        deployment_yaml("dense", dense.url, architecture="dense"),
        deployment_yaml("linear", linear.url, architecture="linear-attention")])
    base_url = f"{router.url}/v1"

    async def interleaved(seconds: float, seed: str) -> tuple[Tally, Tally]:
        short, long = await asyncio.gather(
            send_realistic(base_url, "m", seconds, workers=2, workload=SHORT, seed=f"short-{seed}"),
            send_realistic(base_url, "m", seconds, workers=2, workload=LONG, seed=f"long-{seed}"))
        return short, long

    # The router learns each deployment's prefill slope from its first streamed answers of each size (a whole
    # answer does not show its time to first token).
    asyncio.run(interleaved(8.0, "learning"))
    short, long = asyncio.run(interleaved(10.0, "measured"))
    assert not (short.errors or long.errors), short.errors + long.errors
    assert short.served >= 10 and long.served >= 10, (dict(short.backends), dict(long.backends))
    assert short.share("dense") >= 0.7, dict(short.backends)
    assert long.share("linear") >= 0.7, dict(long.backends)
    errors = {d["name"]: d["size_model"]["ttft"] for d in _get_json(f"{router.url}/routing")["models"]["m"]
              ["deployments"]}
    # The size-aware prediction is closer to what was measured than the size-blind recent mean.
    assert errors["dense"]["mape"] < errors["dense"]["size_blind_mape"], errors


async def _stream(session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int) -> tuple[str, str]:
    """The deployment that answered and the router's reason for picking it (both empty straight from a backend)."""
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": max_tokens}
    async with session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        await response.read()
        return response.headers.get("x-meridian-backend", ""), response.headers.get("x-meridian-reason", "")


def test_a_backend_whose_queue_grows_loses_its_share_before_its_latency_shows_it(
        start_simulator: StartSimulator, start_router: StartRouter) -> None:
    answers = simulator_flags(REALISTIC)
    # Tokens 10 ms apart: the other tenant's long answers keep the queue for seconds without making the simulator
    # itself too busy to answer its metrics page.
    steady = start_simulator("steady", "--model", "m", "--ttft-ms", "60", "--itl-ms", "10", "--capacity", "4",
                             *answers)
    quick = start_simulator("quick", "--model", "m", "--ttft-ms", "20", "--itl-ms", "10", "--capacity", "4",
                            *answers)
    router = _router(start_router, "queue-router", "latency-first", [deployment_yaml("steady", steady.url),
                                                                     deployment_yaml("quick", quick.url)])
    routed = f"{router.url}/v1/chat/completions"

    def quick_figures() -> dict[str, Any]:
        deployments = _get_json(f"{router.url}/routing")["models"]["m"]["deployments"]
        return next(d for d in deployments if d["name"] == "quick")

    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, Any], float,
                                  dict[str, Any]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=100)) as session:
            before = [await _stream(session, routed, f"question {i}", 100) for i in range(12)]
            measured_before = quick_figures()
            # Another tenant, straight to the backend: 12 long answers (about 10 s each) on 4 slots, 8 of them
            # queued for the first 10 s.
            hog = [asyncio.create_task(_stream(session, f"{quick.url}/v1/chat/completions", f"hog {i}", 800))
                   for i in range(12)]
            waiting = 0.0
            for _ in range(40):  # at most 2 s for the router's scrape to see the queue
                await asyncio.sleep(0.05)
                engine = quick_figures()["engine"]
                waiting = engine["requests_waiting"] if engine is not None else 0.0
                if waiting >= 6:
                    break
            during = [await _stream(session, routed, f"question {i}", 100) for i in range(8)]
            measured_during = quick_figures()
            for task in hog:
                task.cancel()
            await asyncio.gather(*hog, return_exceptions=True)
            return before, during, measured_before, waiting, measured_during

    started = time.monotonic()
    before, during, measured_before, waiting, measured_during = asyncio.run(scenario())
    assert time.monotonic() - started < 120
    assert [backend for backend, _ in before].count("quick") >= 9, before
    assert waiting >= 6, waiting
    assert [backend for backend, _ in during].count("quick") <= 1, (during, measured_during["engine"])
    # What the router measured of the backend has not changed: the engine's queue, not a slow answer, moved it.
    # (No figure at all is no slow answer either: quick's recent answers may have aged out of the window.)
    ttft_during = measured_during["stats"]["ttft_ms"]
    assert ttft_during is None or ttft_during <= 1.5 * measured_before["stats"]["ttft_ms"], (
        measured_before["stats"], measured_during["stats"])
