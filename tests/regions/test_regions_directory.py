"""GET /v1/regions on a router: every region's routers with their health, the router itself included, probes
cached; and the pure pieces behind it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from data_plane.api import regions_directory
from data_plane.api.regions_directory import PeerProbe, directory_json, is_fresh, peer_urls
from data_plane.app import create_app
from data_plane.config import RouterConfig
from meridian_common.service_process import pick_free_port

SELF = "http://127.0.0.1:1"


def test_peer_urls_adds_the_router_itself_to_its_region() -> None:
    listed = peer_urls({"eu": ["http://127.0.0.1:2/"]}, "us", SELF)
    assert listed == {"eu": ["http://127.0.0.1:2"], "us": [SELF]}
    assert peer_urls({"us": [SELF + "/"]}, "us", SELF) == {"us": [SELF]}


def test_directory_json_marks_unprobed_peers_unhealthy() -> None:
    body = directory_json("us", SELF, {"us": [SELF], "eu": ["http://a", "http://b"]},
                          {"http://a": PeerProbe(True, 1.23456)})
    assert body["region"] == "us" and body["self"] == SELF
    assert body["regions"]["us"] == [{"url": SELF, "healthy": True, "self": True, "rtt_ms": 0.0}]
    assert body["regions"]["eu"] == [{"url": "http://a", "healthy": True, "rtt_ms": 1.235},
                                     {"url": "http://b", "healthy": False}]


def test_freshness() -> None:
    assert not is_fresh(None, 10.0)
    assert is_fresh(9.5, 10.0, ttl_s=1.0)
    assert not is_fresh(8.9, 10.0, ttl_s=1.0)


def _router_config(peers: dict[str, list[str]]) -> RouterConfig:
    return RouterConfig.model_validate({
        "region": "us-east", "public_url": SELF, "peers": peers,
        "health_check": {"interval_s": 60},
        "models": {"m": {"deployments": [{"name": "d", "url": "http://127.0.0.1:9/v1", "served_model": "m",
                                          "region": "us-east"}]}},
    })


async def _directory(peers_alive: int) -> tuple[dict[str, Any], int]:
    probes = 0

    async def health(request: web.Request) -> web.Response:
        nonlocal probes
        probes += 1
        return web.json_response({"status": "alive"})

    peer_app = web.Application()
    peer_app.router.add_get("/health", health)
    async with TestServer(peer_app, host="127.0.0.1") as peer:
        alive = str(peer.make_url("")).rstrip("/")
        dead = f"http://127.0.0.1:{pick_free_port()}"
        app = create_app(_router_config({"us-east": [SELF], "eu-west": [alive, dead]}))
        if not any(r.resource is not None and r.resource.canonical == "/v1/regions" for r in app.router.routes()):
            regions_directory.add_routes(app)  # until data_plane/app.py wires it
        async with TestServer(app, host="127.0.0.1") as router:
            async with aiohttp.ClientSession() as session:
                url = str(router.make_url("/v1/regions"))
                bodies = await asyncio.gather(*(_get(session, url) for _ in range(peers_alive)))
    return bodies[0], probes


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def test_regions_endpoint_probes_peers_once_per_second() -> None:
    body, probes = asyncio.run(_directory(peers_alive=5))
    assert body["region"] == "us-east"
    assert body["regions"]["us-east"] == [{"url": SELF, "healthy": True, "self": True, "rtt_ms": 0.0}]
    alive, dead = body["regions"]["eu-west"]
    assert alive["healthy"] is True and alive["rtt_ms"] >= 0
    assert dead == {"url": dead["url"], "healthy": False}
    assert probes == 1  # five concurrent requests, one refresh
