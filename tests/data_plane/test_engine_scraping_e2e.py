"""Engine scraping end to end, on real simulator and router processes: a router reads its local deployment's
/metrics page and shows the engine's waiting queue in /routing within a second of it forming; a backend without
a metrics page simply has no engine figures and still serves."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def _engine(router_url: str, deployment: str) -> dict[str, Any] | None:
    deployments = _get_json(f"{router_url}/routing")["models"]["m"]["deployments"]
    return next(d["engine"] for d in deployments if d["name"] == deployment)


def _router_config(*deployments: str) -> str:
    return "region: test\nmodels:\n  m:\n    policy: latency-first\n    deployments:\n" + "\n".join(deployments) + "\n"


async def _chat(session: aiohttp.ClientSession, router_url: str) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
    async with session.post(f"{router_url}/v1/chat/completions", json=body) as response:
        await response.read()
        return response.status


def test_the_engine_queue_shows_in_routing_within_a_second(start_simulator: StartSimulator,
                                                            start_router: StartRouter) -> None:
    sim = start_simulator("engine-sim", "--model", "m", "--capacity", "1", "--ttft-ms", "300", "--itl-ms", "20",
                          "--output-tokens", "20")
    router = start_router("engine-router", _router_config(deployment_yaml("sim", sim.url)))

    async def load_and_watch() -> tuple[float, dict[str, Any]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            requests = [asyncio.create_task(_chat(session, router.url)) for _ in range(4)]
            started = time.monotonic()
            seen: dict[str, Any] | None = None
            while time.monotonic() - started < 5:
                engine = await asyncio.to_thread(_engine, router.url, "sim")
                if engine is not None and engine["requests_waiting"] >= 1:
                    seen = engine
                    break
                await asyncio.sleep(0.05)
            elapsed_s = time.monotonic() - started
            assert all(status == 200 for status in await asyncio.gather(*requests))
            assert seen is not None, "the engine's waiting queue never showed in /routing"
            return elapsed_s, seen

    elapsed_s, engine = asyncio.run(load_and_watch())
    assert elapsed_s < 1.0
    assert engine["source"] == "scraped"
    assert engine["requests_running"] == 1
    assert engine["age_s"] < 1.0
    metrics = urllib.request.urlopen(f"{router.url}/metrics", timeout=5).read().decode()
    assert 'meridian_engine_requests_waiting{architecture="dense",deployment="sim",model="m",region="test"}' in metrics


@pytest.fixture
def backend_without_metrics() -> Iterator[str]:
    """A tiny OpenAI-compatible backend serving only /v1 (as Ollama has no engine metrics page)."""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        })

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


def test_a_backend_without_a_metrics_page_has_no_engine_figures_and_serves(
        backend_without_metrics: str, start_router: StartRouter) -> None:
    router = start_router("plain-router", _router_config(deployment_yaml("plain", backend_without_metrics)))
    time.sleep(1.0)  # several scrape intervals
    assert _engine(router.url, "plain") is None

    async def one() -> int:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            return await _chat(session, router.url)

    assert asyncio.run(one()) == 200
    assert _engine(router.url, "plain") is None
    metrics = urllib.request.urlopen(f"{router.url}/metrics", timeout=5).read().decode()
    assert 'meridian_engine_scrape_errors_total{' not in metrics  # a 404 is no error: the page is simply absent
