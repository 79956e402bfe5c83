"""Region-wide rate limits end to end: two real routers share one client's limit through a real Redis,
and when that Redis is killed each holds its local share (half) instead, without waiting on it. Answers are
a few tokens on purpose: limits are checked to the request."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meridian_common.service_process import ServiceProcess
from regions.local_services import RunningService, start_redis
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

RPM = 120  # a bucket of 120 that refills 2 per second
# Limits are per authenticated client: each test hammers as a client of its own key.
CLIENT_KEYS = {"SHARED_CLIENT_KEYS": "client-one,client-two,client-three"}


def _config(redis_url: str, sim: str, name: str) -> str:
    return f"""region: shared
router_id: {name}
listen: {{host: 127.0.0.1, port: 0}}
redis_url: {redis_url}
client_api_keys_env: SHARED_CLIENT_KEYS
rate_limits: {{sync_interval_s: 0.2, heartbeat_ttl_s: 1.5}}
health_check: {{interval_s: 5}}
models:
  regional:
    client_limits: {{rpm: {RPM}}}
    deployments:
{deployment_yaml("fast", sim)}
"""


@pytest.fixture(scope="module")
def redis(workdir: Path) -> Iterator[RunningService]:
    service = start_redis(workdir / "redis-data", workdir / "redis.log")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def routers(redis: RunningService, start_simulator: StartSimulator, start_router: StartRouter
            ) -> list[ServiceProcess]:
    sim = start_simulator("sim", "--model", "m", "--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", "1")
    started = [start_router(name, _config(redis.url, sim.url, name), env=CLIENT_KEYS)
               for name in ("router-a", "router-b")]
    _wait_for(started, lambda status: status["mode"] == "shared" and status["routers"] == 2)
    return started


def _status(router: ServiceProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{router.url}/routing", timeout=5) as response:
        return dict(json.loads(response.read())["rate_limits"])


def _wait_for(routers: list[ServiceProcess], check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(check(_status(r)) for r in routers):
            return
        time.sleep(0.05)
    raise AssertionError(f"routers did not reach the state: {[_status(r) for r in routers]}")


async def _hammer(router: ServiceProcess, key: str, seconds: float, workers: int = 4) -> int:
    """Requests of one client key for `seconds`; returns how many were admitted (200)."""
    admitted = 0
    body = {"model": "regional", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        async def worker() -> None:
            nonlocal admitted
            while time.monotonic() < deadline:
                async with session.post(f"{router.url}/v1/chat/completions", json=body) as response:
                    await response.read()
                    admitted += response.status == 200
                await asyncio.sleep(0.01)

        await asyncio.gather(*(worker() for _ in range(workers)))
    return admitted


def _hammer_all(routers: list[ServiceProcess], key: str, seconds: float) -> list[int]:
    async def run() -> list[int]:
        return list(await asyncio.gather(*(_hammer(r, key, seconds) for r in routers)))

    return asyncio.run(run())


def test_two_routers_together_hold_the_region_limit(routers: list[ServiceProcess]) -> None:
    seconds = 3.0
    admitted = _hammer_all(routers, "client-one", seconds)
    expected = RPM + RPM / 60 * seconds
    assert expected * 0.9 <= sum(admitted) <= expected * 1.1, admitted
    assert all(_status(r)["mode"] == "shared" for r in routers)


def test_the_allowance_goes_where_the_load_is(routers: list[ServiceProcess]) -> None:
    seconds = 2.0
    admitted = _hammer_all(routers[:1], "client-two", seconds)[0]
    expected = RPM + RPM / 60 * seconds
    # Its local share alone would be 62: sharing lets one busy router use nearly the region's allowance.
    assert expected * 0.8 <= admitted <= expected * 1.1, admitted


def test_with_redis_cut_each_router_holds_its_local_share(routers: list[ServiceProcess],
                                                         redis: RunningService) -> None:
    redis.stop()
    _wait_for(routers, lambda status: status["mode"] == "local-share" and status["routers"] == 2)
    seconds = 2.0
    started = time.monotonic()
    admitted = _hammer_all(routers, "client-three", seconds)
    elapsed = time.monotonic() - started
    share = RPM / 2 + RPM / 60 / 2 * seconds
    assert all(share * 0.9 <= a <= share * 1.1 for a in admitted), admitted
    assert elapsed < seconds + 1.5  # nobody waited on the dead Redis
    assert all("redis unreachable" in (_status(r)["reason"] or "") for r in routers)
