"""Routing under real LLM traffic, end to end on the default topology's stack (three regions, six simulated
backends, every link through the fault proxy): clients of one region send the realistic workload (answers of
hundreds of tokens with a long tail, half streamed, prompts from a line to thousands of tokens) through the
official `openai` SDK for 30 s. Every answer arrives whole, no breaker opens on a healthy backend, and the
region's own backends serve at least 90 % of it."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from meridian_common.workload import REALISTIC, chat_body, draw
from regions.client import nearest_router
from regions.launcher import UpOptions, run_down, run_up
from regions.stack_file import find_stack
from regions.topology import DEFAULT_TOPOLOGY

pytestmark = pytest.mark.integration

MODEL = "llama-3.3-70b"
REGION = "us-east"
SEND_S = 30.0
WORKERS = 10
MAX_REQUESTS_PER_WORKER = 1_000


@dataclass
class Tally:
    regions: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    streams: int = 0
    output_tokens: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("default-stack")
    lines: list[str] = []
    assert run_up(UpOptions(DEFAULT_TOPOLOGY, routers_per_region=1, directory=directory), detach=True,
                  say=lines.append) == 0, "\n".join(lines)
    try:
        yield find_stack(directory)
    finally:
        run_down(directory, say=lines.append)


async def _one(client: openai.AsyncOpenAI, rng: random.Random, tally: Tally) -> None:
    shape = draw(REALISTIC, rng)
    body = chat_body(MODEL, shape, rng)
    options = {key: value for key, value in body.items() if key not in ("model", "messages")}
    try:
        raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=body["messages"],
                                                                     **options)
        answer = raw.parse()
        if shape.stream:
            tokens = 0
            async for chunk in answer:  # the SDK raises on an error event or a cut stream
                tokens += sum(1 for choice in chunk.choices if choice.delta.content)
            tally.streams += 1
        else:
            tokens = answer.usage.completion_tokens if answer.usage else 0
        assert tokens > 0
        tally.output_tokens.append(tokens)
        tally.regions[raw.headers["x-meridian-region"]] += 1
    except (openai.OpenAIError, AssertionError) as error:
        tally.errors.append(f"{type(error).__name__}: {str(error)[:200]}")


async def _clients(base_url: str, seconds: float) -> Tally:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60.0)
    tally = Tally()
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        rng = random.Random(f"realistic-{index}")
        for _ in range(MAX_REQUESTS_PER_WORKER):
            if time.monotonic() >= deadline:
                return
            await _one(client, rng, tally)

    try:
        await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    finally:
        await client.close()
    return tally


def _breakers_opened(router_url: str) -> dict[str, float]:
    """Transitions to open per deployment, from the router's own metrics."""
    with urllib.request.urlopen(f"{router_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    opened: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("meridian_breaker_transitions_total{") and 'to_state="open"' in line:
            deployment = line.split('deployment="', 1)[1].split('"', 1)[0]
            opened[deployment] = opened.get(deployment, 0.0) + float(line.rsplit(" ", 1)[1])
    return opened


def test_a_region_under_realistic_traffic_is_served_whole_at_home_without_a_breaker_opening(
        stack: dict[str, Any]) -> None:
    router = asyncio.run(nearest_router(stack, location=REGION))
    assert router.region == REGION
    tally = asyncio.run(_clients(router.base_url, SEND_S))
    served = sum(tally.regions.values())
    assert not tally.errors, f"{len(tally.errors)} of {served + len(tally.errors)} failed: {tally.errors[:5]}"
    # The workload really was LLM-shaped: hundreds of tokens, half of them streamed.
    assert served >= 100, served
    assert 0.3 <= tally.streams / served <= 0.7, tally.streams
    assert sorted(tally.output_tokens)[served // 2] >= 100, "median answer under 100 tokens"
    assert tally.regions[REGION] / served >= 0.9, dict(tally.regions)
    for url in (entry["url"] for entry in stack["router_ids"].values()):
        assert _breakers_opened(url) == {}, f"a breaker opened on a healthy backend at {url}"
    routing = json.loads(urllib.request.urlopen(f"{router.url}/routing", timeout=5).read())
    states = {d["name"]: d["breaker"] for d in routing["models"][MODEL]["deployments"]}
    assert set(states.values()) == {"closed"}, states
