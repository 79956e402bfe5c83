"""Asynchronous jobs end to end: two real routers share a real Redis (with an append-only file, so that a
SIGKILLed Redis restarts with what it had acknowledged), real simulators, and a callback receiver on
127.0.0.1. Raw HTTP throughout, as a client without an SDK for jobs would use it. Answers are a few tokens on
purpose: these check a job's durability and delivery, whatever it generates."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from data_plane.callback_rules import signature_valid
from data_plane.jobs.callbacks import SIGNATURE_HEADER
from meridian_cli.main import main as meridian_main
from meridian_common.service_process import LOOPBACK, ManagedProcess, ServiceProcess, pick_free_port, spawn, wait_ready
from regions.local_services import redis_executable
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "jobs-admin-token"
CALLBACK_SECRET = "jobs-callback-secret"
ENV = {"JOBS_ADMIN_TOKEN": ADMIN_TOKEN, "JOBS_CALLBACK_SECRET": CALLBACK_SECRET}
SLOW_TTFT_MS = 2500


@dataclass
class DurableRedis:
    """A Redis that fsyncs every write to its append-only file: killed and restarted on the same port and
    directory, it comes back with every write it acknowledged."""

    port: int
    directory: Path
    managed: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        argv = [str(redis_executable()), "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory),
                "--daemonize", "no", "--loglevel", "warning"]
        self.managed = spawn("redis-jobs", argv, self.directory / "redis.log")
        wait_ready(self.managed, self._pings, 20.0)

    def _pings(self) -> bool:
        import socket

        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.managed is not None:
            self.managed.kill()

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()


@dataclass
class CallbackReceiver:
    """Answers each POST with the next planned status (then 200) and records what arrived."""

    planned: list[int] = field(default_factory=list)
    received: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0


@pytest.fixture(scope="module")
def redis(workdir: Path) -> Iterator[DurableRedis]:
    directory = workdir / "jobs-redis"
    directory.mkdir()
    service = DurableRedis(pick_free_port(), directory)
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    state = CallbackReceiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                status = state.planned.pop(0) if state.planned else 200
                state.received.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _config(name: str, redis_url: str, fast: str, slow: str, callback_port: int) -> str:
    return f"""region: jobs
router_id: {name}
listen: {{host: 127.0.0.1, port: 0}}
redis_url: {redis_url}
admin_token_env: JOBS_ADMIN_TOKEN
health_check: {{interval_s: 5}}
jobs:
  lease_s: 1.0
  poll_interval_s: 0.1
  retry_backoff_s: 0.2
  callback_secret_env: JOBS_CALLBACK_SECRET
  callback_allowed_hosts: ["127.0.0.1:{callback_port}"]
  callback_private_addresses: true  # the receiver is on loopback
  callback_backoff_s: 0.2
  callback_timeout_s: 2
models:
  m:
    deployments:
{deployment_yaml("fast", fast)}
  slow:
    deployments:
{deployment_yaml("slow", slow)}
  limited:
    client_limits: {{rpm: 3}}
    deployments:
{deployment_yaml("limited-fast", fast)}
"""


@dataclass
class Region:
    routers: list[ServiceProcess]
    slow: ServiceProcess
    accepted: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def region(redis: DurableRedis, receiver: CallbackReceiver, start_simulator: StartSimulator,
           start_router: StartRouter) -> Region:
    fast = start_simulator("jobs-fast", "--model", "m", "--ttft-ms", "2", "--itl-ms", "1", "--output-tokens", "4")
    slow = start_simulator("jobs-slow", "--model", "m", "--ttft-ms", str(SLOW_TTFT_MS), "--itl-ms", "1",
                           "--output-tokens", "4")
    routers = [start_router(name, _config(name, redis.url, fast.url, slow.url, receiver.port), env=ENV)
               for name in ("jobs-a", "jobs-b")]
    return Region(routers, slow)


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def _chat(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello jobs"}], "max_tokens": 4, **extra}


def _submit(region: Region, router: ServiceProcess, body: dict[str, Any]) -> str:
    status, headers, answer = _http("POST", f"{router.url}/v1/async/chat/completions", body)
    assert status == 202, answer
    assert answer["status"] == "queued" and answer["poll_url"] == f"/v1/async/{answer['id']}"
    assert headers["Location"] == answer["poll_url"]
    region.accepted.append(answer["id"])
    return str(answer["id"])


def _poll(router: ServiceProcess, job_id: str) -> dict[str, Any]:
    status, _, answer = _http("GET", f"{router.url}/v1/async/{job_id}")
    assert status == 200, answer
    return dict(answer)


def _until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout_s} s (last: {last})")


def _status_is(router: ServiceProcess, job_id: str, *statuses: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        job = _poll(router, job_id)
        return job if job["status"] in statuses else None

    return check


def _anonymous_cost(region: Region) -> float:
    """The cost counted for clients without a key, on every router (the job ran on one of them)."""
    total = 0.0
    for router in region.routers:
        with urllib.request.urlopen(f"{router.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        total += sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                     if sample.name == "meridian_client_cost_usd_total" and sample.labels["client"] == "anonymous")
    return total


def test_a_job_completes_as_the_synchronous_request_would(region: Region) -> None:
    a, b = region.routers
    cost_before = _anonymous_cost(region)
    job_id = _submit(region, a, _chat(stream=True))  # streaming is dropped: a job's answer is kept whole
    job = _until(_status_is(b, job_id, "succeeded", "failed"), 10, "the job's completion")  # any router answers
    assert job["status"] == "succeeded" and job["status_code"] == 200 and job["attempts"] == 1
    usage = job["result"]["usage"]
    cost = (usage["prompt_tokens"] * 0.1 + usage["completion_tokens"] * 0.2) / 1e6  # deployment_yaml's prices
    assert float(job["response_headers"]["x-meridian-cost-usd"]) == pytest.approx(cost)
    assert _anonymous_cost(region) - cost_before == pytest.approx(cost)  # a job's cost counts for its client
    status, _, sync = _http("POST", f"{a.url}/v1/chat/completions", _chat())
    assert status == 200
    result = job["result"]
    assert set(result) == set(sync) and result["object"] == "chat.completion" and result["model"] == sync["model"]
    assert set(result["usage"]) == set(sync["usage"]) and result["choices"][0]["message"]["content"]
    assert job["response_headers"]["x-meridian-backend"] == "fast"


def test_bad_submits_are_refused_at_once(region: Region, receiver: CallbackReceiver) -> None:
    a = region.routers[0]
    status, _, answer = _http("POST", f"{a.url}/v1/async/chat/completions", _chat("no-such-model"))
    assert status == 404 and answer["error"]["code"] == "model_not_found"
    status, _, answer = _http("POST", f"{a.url}/v1/async/chat/completions",
                              _chat(callback_url="http://evil.example.net/hook"))
    assert status == 400 and answer["error"]["param"] == "callback_url"
    assert "evil.example.net" in answer["error"]["message"]
    status, _, answer = _http("GET", f"{a.url}/v1/async/job_{'0' * 32}")
    assert status == 404 and answer["error"]["code"] == "job_not_found" and answer["error"]["type"]
    status, _, answer = _http("GET", f"{a.url}/v1/async")
    assert status == 401  # listing every client's jobs is for operators
    assert not receiver.received


def test_cancel_stops_a_running_job_and_drops_its_result(region: Region) -> None:
    a, b = region.routers
    job_id = _submit(region, a, _chat("slow"))
    _until(_status_is(a, job_id, "running"), 5, "the job starting")
    status, _, answer = _http("DELETE", f"{b.url}/v1/async/{job_id}")
    assert status == 200 and answer["status"] == "cancelled"
    time.sleep(SLOW_TTFT_MS / 1000 + 0.5)  # past the moment the backend would have answered
    assert _poll(a, job_id)["status"] == "cancelled" and "result" not in _poll(a, job_id)
    status, _, answer = _http("DELETE", f"{a.url}/v1/async/{job_id}")
    assert status == 409 and answer["error"]["code"] == "job_not_cancellable"


def test_a_callback_arrives_signed_and_is_delivered_once(region: Region, receiver: CallbackReceiver) -> None:
    receiver.planned[:] = [500]  # the first delivery fails: the retry must come, and only one success
    url = f"http://127.0.0.1:{receiver.port}/hook"
    job_id = _submit(region, region.routers[1], _chat(callback_url=url))
    _until(lambda: len(receiver.received) >= 2, 10, "two callback posts")
    time.sleep(1.0)  # several sweeps and callback polls of both routers later
    assert [status for status, _, _ in receiver.received] == [500, 200]
    for _, headers, body in receiver.received:
        assert signature_valid(CALLBACK_SECRET.encode(), body, headers[SIGNATURE_HEADER], now_s=time.time())
        assert headers["x-meridian-job-id"] == job_id
    delivered = json.loads(receiver.received[-1][2])
    assert delivered["id"] == job_id and delivered["status"] == "succeeded"
    assert delivered["result"]["object"] == "chat.completion"
    callback = _poll(region.routers[0], job_id)["callback"]
    assert callback == {"url": url, "status": "delivered", "attempts": 2}


def test_submissions_count_against_the_clients_limits(region: Region) -> None:
    statuses = []
    for _ in range(6):
        status, _, answer = _http("POST", f"{region.routers[0].url}/v1/async/chat/completions", _chat("limited"))
        statuses.append(status)
        if status == 202:
            region.accepted.append(answer["id"])
        else:
            assert status == 429 and answer["error"]["code"] == "rate_limit_exceeded", answer
    # rpm 3 for the region, of which this router holds its share: never more than 3, and the flood is refused.
    assert 1 <= statuses.count(202) <= 3 and statuses[-1] == 429, statuses


def test_routing_counts_running_jobs_without_naming_them(region: Region) -> None:
    job_id = _submit(region, region.routers[0], _chat("slow"))

    def running_somewhere() -> list[dict[str, Any]] | None:
        answers = [_http("GET", f"{router.url}/routing")[2] for router in region.routers]
        return answers if any(a["jobs"]["running_here"] for a in answers) else None

    answers = _until(running_somewhere, 5, "the slow job running on a router")
    assert all(isinstance(a["jobs"]["running_here"], int) for a in answers)
    assert job_id not in json.dumps(answers), "a job id is its client's to see, not every reader of /routing"


def test_the_operators_cli_lists_shows_and_cancels(region: Region, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a = region.routers[0]
    monkeypatch.setenv("MERIDIAN_ADMIN_TOKEN", ADMIN_TOKEN)
    assert meridian_main(["jobs", "list", "--router", a.url, "--status", "succeeded"]) == 0
    listed = capsys.readouterr().out
    assert region.accepted[0] in listed and "cancelled" not in listed
    assert meridian_main(["jobs", "show", region.accepted[0], "--router", a.url]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    job_id = _submit(region, a, _chat("slow"))
    assert meridian_main(["jobs", "cancel", job_id, "--router", a.url]) == 0
    assert capsys.readouterr().out.strip() == f"{job_id} cancelled"
    assert meridian_main(["jobs", "cancel", job_id, "--router", a.url]) == 1
    assert "already cancelled" in capsys.readouterr().err


def test_a_job_survives_the_sigkill_of_its_router(region: Region) -> None:
    job_id = _submit(region, region.routers[0], _chat("slow"))
    running = _until(_status_is(region.routers[0], job_id, "running"), 5, "the job starting")
    owner = next(r for r in region.routers if r.name == running["owner"])
    survivor = next(r for r in region.routers if r is not owner)
    time.sleep(0.5)  # mid-run: the backend is still working on it
    owner.kill()
    job = _until(_status_is(survivor, job_id, "succeeded", "failed"), 15, "the takeover and completion")
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert job["result"]["choices"][0]["message"]["content"]
    region.routers[:] = [survivor]


def test_with_redis_down_a_submit_is_refused_and_nothing_is_lost(region: Region, redis: DurableRedis) -> None:
    router = region.routers[0]
    before = _submit(region, router, _chat())
    _until(_status_is(router, before, "succeeded"), 10, "the job before the kill")
    redis.kill()
    started = time.monotonic()
    status, headers, answer = _http("POST", f"{router.url}/v1/async/chat/completions", _chat())
    assert time.monotonic() - started < 2.0
    assert status == 503 and answer["error"]["code"] == "jobs_unavailable" and headers["Retry-After"]
    assert "NOT accepted" in answer["error"]["message"] and "Redis" in answer["error"]["message"]
    status, _, _ = _http("POST", f"{router.url}/v1/chat/completions", _chat())
    assert status == 200  # synchronous traffic does not need Redis
    status, _, answer = _http("GET", f"{router.url}/v1/async/{before}")
    assert status == 503 and answer["error"]["code"] == "jobs_unavailable"
    _until(lambda: _http("GET", f"{router.url}/routing")[2]["jobs"]["store"] == "unreachable", 5,
           "/routing showing the job store unreachable")

    redis.start()
    job = _until(lambda: _http("GET", f"{router.url}/v1/async/{before}")[0] == 200 and _poll(router, before), 5,
                 "the job answering after the restart")
    assert job["status"] == "succeeded" and job["result"]["object"] == "chat.completion"
    status, _, listed = _http("GET", f"{router.url}/v1/async?limit=1000", token=ADMIN_TOKEN)
    assert status == 200
    # Every 202 is in Redis, and nothing else is: the refused submit was not queued anywhere.
    assert sorted(row["id"] for row in listed["data"]) == sorted(region.accepted)
    after = _submit(region, router, _chat())
    assert _until(_status_is(router, after, "succeeded", "failed"), 10, "a job after the restart")["status"] == \
        "succeeded"
