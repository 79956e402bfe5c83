"""The router's edge end to end: malformed OpenAI shapes are a 400 that never reaches a backend, the bytes of
bodies held at once are bounded (503 with Retry-After past the budget, given back when a request ends), a client
that stalls mid-body gets 408, and large bodies of tiny objects are refused while /health keeps answering."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from meridian_common.service_process import ServiceProcess
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MAX_BODY = 4 * MiB
IN_FLIGHT = 16 * MiB
READ_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def stack(start_simulator: StartSimulator, start_router: StartRouter) -> tuple[ServiceProcess, ServiceProcess]:
    simulator = start_simulator("sim", "--model", "m", "--ttft-ms", "1", "--itl-ms", "1")
    router = start_router("router", f"""region: test
listen: {{host: 127.0.0.1, port: 0}}
max_body_bytes: {MAX_BODY}
request_bodies: {{in_flight_bytes: {IN_FLIGHT}, read_timeout_s: {READ_TIMEOUT_S}}}
health_check: {{interval_s: 30, latency_probe_tokens: 0}}  # no probe answer to miscount as forwarded
models:
  m:
    deployments:
{deployment_yaml("sim", simulator.url)}
""")
    return router, simulator


async def _post(session: aiohttp.ClientSession, url: str, body: bytes | AsyncIterator[bytes]
                ) -> tuple[int, dict[str, str], dict[str, Any]]:
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


def _held_bytes(router: ServiceProcess) -> float:
    async def run() -> float:
        async with aiohttp.ClientSession() as session, session.get(f"{router.url}/metrics") as response:
            text = await response.text()
        line = next(line for line in text.splitlines()
                    if line.startswith('meridian_request_body_bytes_held{region="test"}'))
        return float(line.rsplit(" ", 1)[1])

    return asyncio.run(run())


def _wait_for_held(router: ServiceProcess, expected: float, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(500):
        if _held_bytes(router) == expected or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert _held_bytes(router) == expected


def _stalled_client(router: ServiceProcess, declared: int) -> socket.socket:
    """Sends the headers of a chat request whose body never comes."""
    client = socket.create_connection(("127.0.0.1", router.port), timeout=10)
    client.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {declared}\r\n\r\n".encode() + b'{"model": "m", "mess')
    return client


def _status_line(client: socket.socket) -> bytes:
    received = b""
    for _ in range(100):
        chunk = client.recv(4096)
        received += chunk
        if not chunk or b"\r\n" in received:
            break
    return received.split(b"\r\n", 1)[0]


def test_the_budget_refuses_bodies_past_it_and_a_stalled_client_gets_408(
        stack: tuple[ServiceProcess, ServiceProcess]) -> None:
    router, _ = stack
    stalled = [_stalled_client(router, MAX_BODY) for _ in range(IN_FLIGHT // MAX_BODY)]
    try:
        _wait_for_held(router, IN_FLIGHT)
        status, headers, answer = _send(f"{router.url}/v1/chat/completions", _chat())
        assert status == 503 and headers["Retry-After"] == "1"
        assert answer["error"]["code"] == "request_bodies_over_budget"
        started = time.monotonic()
        assert [_status_line(client) for client in stalled] == [b"HTTP/1.1 408 Request Timeout"] * len(stalled)
        assert time.monotonic() - started < READ_TIMEOUT_S + 8
    finally:
        for client in stalled:
            client.close()
    _wait_for_held(router, 0)
    assert _send(f"{router.url}/v1/chat/completions", _chat())[0] == 200


def test_size_limits_hold_with_and_without_content_length(stack: tuple[ServiceProcess, ServiceProcess]) -> None:
    router, _ = stack
    url = f"{router.url}/v1/chat/completions"

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 256 * 1024):
            yield body[start:start + 256 * 1024]

    async def run() -> list[tuple[int, str | None]]:
        too_large = _chat(filler="x" * MAX_BODY)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            answers = [await _post(session, url, too_large), await _post(session, url, chunked(too_large)),
                       await _post(session, url, chunked(_chat(filler="x" * (MAX_BODY // 2))))]
        return [(status, answer.get("error", {}).get("code")) for status, _, answer in answers]

    assert asyncio.run(run()) == [(413, "request_too_large"), (413, "request_too_large"), (200, None)]
    _wait_for_held(router, 0)


def test_bodies_of_tiny_objects_are_refused_while_health_answers(
        stack: tuple[ServiceProcess, ServiceProcess]) -> None:
    router, _ = stack
    head, tail = b'{"model": "m", "messages": [', b"]}"
    body = head + b",".join([b"{}"] * ((MAX_BODY - len(head) - len(tail)) // 3)) + tail
    assert len(body) <= MAX_BODY

    async def run() -> tuple[list[tuple[int, dict[str, Any]]], list[float]]:
        health_s: list[float] = []
        done = asyncio.Event()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def poll_health() -> None:
                for _ in range(2000):
                    started = time.monotonic()
                    async with session.get(f"{router.url}/health") as response:
                        assert response.status == 200
                    health_s.append(time.monotonic() - started)
                    if done.is_set():
                        return
                    await asyncio.sleep(0.01)

            poller = asyncio.create_task(poll_health())
            answers = await asyncio.gather(*(_post(session, f"{router.url}/v1/chat/completions", body)
                                             for _ in range(4)))
            done.set()
            await poller
        return [(status, answer) for status, _, answer in answers], health_s

    answers, health_s = asyncio.run(run())
    assert [(status, answer["error"]["param"]) for status, answer in answers] == [(400, "messages[0].role")] * 4
    assert health_s and max(health_s) < 2.0, max(health_s)
    _wait_for_held(router, 0)
