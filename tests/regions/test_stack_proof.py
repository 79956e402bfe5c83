"""The "Regions" issue's proof, end to end with real processes: a two-region stack with one router per region
(the launcher's API), the realistic workload through the official `openai` SDK to each client's nearest
router, a policy push that every router ACKs, a saturated backend whose traffic leaves it (spilling to the
other region), and a teardown that leaves no process behind."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control_plane.admin.client import AdminTarget, call
from demo.run import policy_document, routers_acked
from fixtures.sdk_clients import send_realistic
from meridian_common.workload import REALISTIC, chat_body, median_shape
from regions.client import nearest_router
from regions.launcher import UpOptions, run_up
from regions.stack_file import ProcessRecord, admin_token, admin_urls, find_stack, processes
from regions.teardown import run_down
from regions.topology import DEFAULT_TOPOLOGY

pytestmark = pytest.mark.integration

TOPOLOGY = DEFAULT_TOPOLOGY.parent / "topology-two-regions.yaml"
MODEL = "test-model"
ACK_TIMEOUT_S = 15.0
SEND_S = 4.0
WORKERS = 4
HOG_STREAMS = 16  # twice eu-linear's capacity: past its cliff whatever the router sends


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    lines: list[str] = []
    assert run_up(UpOptions(TOPOLOGY, routers_per_region=1, directory=tmp_path), detach=True,
                  say=lines.append) == 0, "\n".join(lines)
    running = find_stack(tmp_path)
    try:
        yield running
    finally:
        run_down(tmp_path, say=lines.append)


async def _send(base_url: str, seconds: float) -> Counter[str]:
    """The realistic workload from the SDK for `seconds`; counts the backend of every answer (any failure fails
    the test: a healthy candidate exists throughout)."""
    tally = await send_realistic(base_url, MODEL, seconds, workers=WORKERS)
    assert not tally.errors, tally.errors[:5]
    return tally.backends


def _share(served: Counter[str], backend: str) -> float:
    return served[backend] / max(1, sum(served.values()))


async def _hog(url: str, stop: asyncio.Event) -> None:
    """Another tenant's whole answers of the median length, straight to the backend."""
    body = chat_body(MODEL, median_shape(REALISTIC, stream=False), random.Random(0))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(10_000):
            if stop.is_set():
                return
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                await response.read()


async def _saturated(url: str, base_url: str, warm_s: float, seconds: float) -> Counter[str]:
    stop = asyncio.Event()
    hogs = [asyncio.create_task(_hog(url, stop)) for _ in range(HOG_STREAMS)]
    try:
        await _send(base_url, warm_s)  # the router learns: slow answers, a full deployment
        return await _send(base_url, seconds)
    finally:
        stop.set()
        await asyncio.gather(*hogs)


def _routing_version(router_url: str) -> int:
    with urllib.request.urlopen(f"{router_url}/routing", timeout=5) as response:
        return int(json.loads(response.read())["table"]["version"])


def test_two_regions_nearest_router_policy_ack_saturation_and_teardown(stack: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    # Nearest router, per client location; the SDK talks to it unchanged.
    choices = {region: asyncio.run(nearest_router(stack, location=region)) for region in stack["routers"]}
    assert {region: choice.region for region, choice in choices.items()} == {"us-east": "us-east",
                                                                             "eu-west": "eu-west"}
    eu = choices["eu-west"]
    baseline = asyncio.run(_send(eu.base_url, SEND_S))
    assert _share(baseline, "eu-linear") >= 0.8, baseline  # latency-first keeps eu-west at home

    # A policy push every router ACKs: /v1/status lists each one on its region's new table, and /routing agrees.
    target = AdminTarget(tuple(admin_urls(stack)), admin_token(stack), "stack.json")
    result = call(target, "POST", "/v1/policy", {"yaml": policy_document([MODEL], list(stack["routers"]),
                                                                         "cost-first", 200), "author": "test"})
    version = int(result["version"])
    deadline = time.monotonic() + ACK_TIMEOUT_S
    acked: dict[str, int] = {}
    while len(acked) < len(stack["router_ids"]) and time.monotonic() < deadline:
        acked = routers_acked(call(target, "GET", "/v1/status"), stack["router_ids"], version)
        time.sleep(0.2)
    assert set(acked) == set(stack["router_ids"]), acked
    for router_id, entry in stack["router_ids"].items():
        assert _routing_version(entry["url"]) == acked[router_id]

    # eu-linear saturated by another tenant: eu-west's traffic leaves it, for us-dense 60 ms away.
    sim_url = f"http://{stack['backends']['eu-linear']['address']}"
    during = asyncio.run(_saturated(sim_url, eu.base_url, warm_s=3.0, seconds=SEND_S))
    assert _share(during, "eu-linear") <= 0.5 * _share(baseline, "eu-linear"), (baseline, during)
    assert during["us-dense"] > 0, during

    # Teardown: every process stack.json named is gone.
    records = processes(stack)
    assert len(records) >= 9
    assert run_down(tmp_path, say=lambda _: None) == 0
    assert [r.name for r in records if ProcessRecord.alive(r)] == []
    assert not (tmp_path / ".meridian" / "stack.json").exists()
