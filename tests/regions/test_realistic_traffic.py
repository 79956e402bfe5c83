"""Routing under real LLM traffic, end to end on the default topology's stack (three regions, six simulated
backends, every link through the fault proxy): clients of one region send the realistic workload (answers of
hundreds of tokens with a long tail, half streamed, prompts from a line to thousands of tokens) through the
official `openai` SDK for 30 s. Every answer arrives whole, no breaker opens on a healthy backend, and the
region's own backends serve at least 90 % of it."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.sdk_clients import send_realistic
from regions.client import nearest_router
from regions.launcher import UpOptions, run_up
from regions.stack_file import find_stack
from regions.teardown import run_down
from regions.topology import DEFAULT_TOPOLOGY

pytestmark = pytest.mark.integration

MODEL = "llama-3.3-70b"
REGION = "us-east"
SEND_S = 30.0
WORKERS = 10


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
    tally = asyncio.run(send_realistic(router.base_url, MODEL, SEND_S, workers=WORKERS))
    served = tally.served
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
