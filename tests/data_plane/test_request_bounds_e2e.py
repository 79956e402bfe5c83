"""The router's edge end to end: malformed OpenAI shapes are a 400 that never reaches a backend."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from meridian_common.service_process import ServiceProcess
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MAX_BODY = 4 * MiB


@pytest.fixture(scope="module")
def stack(start_simulator: StartSimulator, start_router: StartRouter) -> tuple[ServiceProcess, ServiceProcess]:
    simulator = start_simulator("sim", "--model", "m", "--ttft-ms", "1", "--itl-ms", "1")
    router = start_router("router", f"""region: test
listen: {{host: 127.0.0.1, port: 0}}
max_body_bytes: {MAX_BODY}
health_check: {{interval_s: 30, latency_probe_tokens: 0}}  # no probe answer to miscount as forwarded
models:
  m:
    deployments:
{deployment_yaml("sim", simulator.url)}
""")
    return router, simulator


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


def _send(url: str, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    async def run() -> tuple[int, dict[str, str], dict[str, Any]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            return await _post(session, url, body)

    return asyncio.run(run())


def _served(simulator: ServiceProcess) -> int:
    async def run() -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{simulator.url}/sim/config") as response:
            return int((await response.json())["served"])

    return asyncio.run(run())


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                       **fields}).encode()


@pytest.mark.parametrize(("path", "body", "param", "code"), [
    ("completions", {"model": "m", "messages": 5}, "prompt", "missing_required_parameter"),
    ("chat/completions", {"model": "m", "messages": 5}, "messages", "invalid_type"),
    ("chat/completions", {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
     "messages[0].content[0].text", "invalid_type"),
    ("chat/completions", {"model": "m", "messages": [{"role": "user", "content": "a"}, {"content": "b"}]},
     "messages[1].role", "missing_required_parameter"),
    ("completions", {"model": "m", "prompt": ["a", 3]}, "prompt[1]", "invalid_type"),
    ("embeddings", {"model": "m", "input": 5}, "input", "invalid_type"),
    ("chat/completions", {"model": "m", "messages": [{"role": "user", "content": "a"}], "max_tokens": -1},
     "max_tokens", "invalid_value"),
])
def test_malformed_shapes_are_400_and_never_forwarded(stack: tuple[ServiceProcess, ServiceProcess], path: str,
                                                      body: dict[str, Any], param: str, code: str) -> None:
    router, simulator = stack
    served = _served(simulator)
    status, headers, answer = _send(f"{router.url}/v1/{path}", json.dumps(body).encode())
    assert status == 400, answer
    assert answer["error"]["param"] == param and answer["error"]["code"] == code
    assert answer["error"]["type"] == "invalid_request_error"
    assert "x-meridian-backend" not in headers
    assert _served(simulator) == served


def test_a_good_request_still_reaches_the_backend(stack: tuple[ServiceProcess, ServiceProcess]) -> None:
    router, simulator = stack
    status, headers, answer = _send(f"{router.url}/v1/chat/completions", _chat())
    assert status == 200, answer
    assert headers["x-meridian-backend"] == "sim"
