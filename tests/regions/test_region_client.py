"""Nearest-region selection: the pure ranking (measured + simulated distance), and a RegionClient that moves to
the next nearest router when the one it uses stops answering."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from regions.client import RegionClient, RouterCandidate, measure_rtt, rank, simulated_rtt_ms

RTT = {"us": {"us": 0.0, "eu": 80.0, "ap": 200.0}, "eu": {"us": 80.0, "eu": 0.0, "ap": 140.0},
       "ap": {"us": 200.0, "eu": 140.0, "ap": 0.0}}
US, EU, AP = RouterCandidate("us", "http://us"), RouterCandidate("eu", "http://eu"), RouterCandidate("ap", "http://ap")


def test_simulated_distance_comes_from_the_topology() -> None:
    assert simulated_rtt_ms(RTT, "eu", "ap") == 140
    assert simulated_rtt_ms(RTT, None, "ap") == 0
    assert simulated_rtt_ms(None, "eu", "ap") == 0


@pytest.mark.parametrize(
    ("location", "exclude", "expected"),
    [
        (None, (), ["http://eu", "http://us", "http://ap"]),  # measured only
        ("ap", (), ["http://ap", "http://eu", "http://us"]),
        ("us", (), ["http://us", "http://eu", "http://ap"]),
        ("us", ("http://us",), ["http://eu", "http://ap"]),
    ],
)
def test_rank(location: str | None, exclude: tuple[str, ...], expected: list[str]) -> None:
    measured = {US: 0.5, EU: 0.2, AP: 0.9}
    assert [c.url for c in rank(measured, location=location, rtt=RTT, exclude=exclude)] == expected


def test_rank_drops_unhealthy_and_silent_routers() -> None:
    sick = RouterCandidate("us", "http://us2", healthy=False)
    ranked = rank({US: None, sick: 0.1, EU: 1.0}, location="us", rtt=RTT)
    assert [(c.region, c.rtt_ms) for c in ranked] == [("eu", 81.0)]


def _router_app(region: str, directory: dict[str, Any]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def regions(request: web.Request) -> web.Response:
        return web.json_response(directory)

    async def chat(request: web.Request) -> web.Response:
        return web.json_response({"served_by": region}, headers={"x-meridian-region": region})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/regions", regions)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def _failover() -> tuple[list[str], float | None]:
    directory: dict[str, Any] = {"regions": {}}
    near, far = TestServer(_router_app("eu", directory)), TestServer(_router_app("us", directory))
    await near.start_server()
    await far.start_server()
    near_url, far_url = str(near.make_url("")).rstrip("/"), str(far.make_url("")).rstrip("/")
    directory["regions"] = {"eu": [{"url": near_url, "healthy": True}], "us": [{"url": far_url, "healthy": True}]}
    served = []
    try:
        rtt = await measure_rtt(near_url)
        client = RegionClient([near_url, far_url], location="eu", rtt=RTT)
        choice = await client.connect()
        served.append(choice.region)
        async with aiohttp.ClientSession() as session:
            status, _, body = await client.post_json(session, "/v1/chat/completions", {"model": "m"})
            assert status == 200
            served.append(body["served_by"])
            await near.close()  # the nearest region goes down
            status, _, body = await client.post_json(session, "/v1/chat/completions", {"model": "m"})
            assert status == 200
            served.append(body["served_by"])
        assert client.base_url == f"{far_url}/v1"
    finally:
        await near.close()
        await far.close()
    return served, rtt


def test_region_client_moves_to_the_next_nearest_when_its_router_goes_down() -> None:
    served, rtt = asyncio.run(_failover())
    assert served == ["eu", "eu", "us"]
    assert rtt is not None and rtt >= 0


def test_measure_rtt_of_a_silent_router_is_none() -> None:
    from meridian_common.service_process import pick_free_port

    assert asyncio.run(measure_rtt(f"http://127.0.0.1:{pick_free_port()}", samples=1)) is None
