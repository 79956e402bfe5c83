"""Bounded closed-loop load for chaos runs and the demo: simulated clients in every region, each on its nearest
router (measured round trip plus the topology's RTT from the client's location, as `regions.client` ranks
them), moving to the next nearest when its router does not answer. Each request's shape is drawn from its
client's workload (`meridian_common.workload`); every request is recorded, streams with their time to first
token.

Bounded twice: by a stop event (the runner's schedule) and by a request count per worker.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from harness.timeline import RequestRecord
from meridian_common.workload import NO_OVERRIDES, REALISTIC, WorkloadConfig, WorkloadOverrides, chat_body, draw
from regions.client import NoRouterError, RegionClient

# Room for a 2,000-token answer from a loaded backend; the connect timeout still finds a dead router fast.
REQUEST_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 2.0
DONE = b"[DONE]"
RESUMED = b": meridian resumed"


# --- reading a stream (pure) -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StreamOutcome:
    error: str | None
    """Why the stream failed (an error event, or it ended before `data: [DONE]`); None when it completed."""
    content_chunks: int
    output_tokens: int
    """The usage the stream reported, else its content chunks."""
    finish_reasons: int = 0
    resumes: int = 0
    """`: meridian resumed` comments: continuations a router stitched in after a backend cut the stream."""

    @property
    def ok(self) -> bool:
        return self.error is None


def reported_output_tokens(message: Any) -> int | None:
    """The output tokens a response body or stream chunk reports (OpenAI's usage, or Ollama's eval_count)."""
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    value = usage.get("completion_tokens") if isinstance(usage, dict) else message.get("eval_count")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _finish_reasons(message: dict[str, Any]) -> int:
    choices = message.get("choices")
    return sum(1 for choice in choices if isinstance(choice, dict) and choice.get("finish_reason") is not None
               ) if isinstance(choices, list) else 0


def _content_chunks(message: dict[str, Any]) -> int:
    choices = message.get("choices")
    if not isinstance(choices, list):
        return 0
    count = 0
    for choice in choices:
        if isinstance(choice, dict):
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            count += isinstance(text, str) and text != ""
    return count


class StreamReader:
    """An OpenAI server-sent-event stream read as it arrives (h11's way: bytes in, facts out, no I/O). A stream
    counts as complete only when it ends with `data: [DONE]` and carried no error event."""

    def __init__(self) -> None:
        self._pending = b""
        self._event = ""
        self._done = False
        self._error: str | None = None
        self._usage_tokens: int | None = None
        self.content_chunks = 0
        self.finish_reasons = 0
        self.resumes = 0

    def feed(self, data: bytes) -> None:
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def finish(self) -> StreamOutcome:
        """What the stream amounted to once the connection ended."""
        if self._pending:
            self._line(self._pending.rstrip(b"\r"))
            self._pending = b""
        error = self._error
        if error is None and not self._done:
            error = f"stream cut before data: [DONE] after {self.content_chunks} content chunks"
        tokens = self._usage_tokens if self._usage_tokens is not None else self.content_chunks
        return StreamOutcome(error, self.content_chunks, tokens, self.finish_reasons, self.resumes)

    def _line(self, line: bytes) -> None:
        if not line:
            self._event = ""  # an empty line ends an event
            return
        if line.startswith(RESUMED):
            self.resumes += 1
            return
        if line.startswith(b"event:"):
            self._event = line[6:].strip().decode(errors="replace")
            return
        if not line.startswith(b"data:") or self._done or self._error is not None:
            return  # comments (": keep-alive"), ids, and whatever follows the end
        payload = line[5:].strip()
        if payload == DONE:
            self._done = True
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._error = f"malformed stream event: {payload[:120].decode(errors='replace')}"
            return
        if self._event == "error" or (isinstance(message, dict) and "error" in message):
            detail = message.get("error", message) if isinstance(message, dict) else message
            if isinstance(detail, dict):
                detail = detail.get("message", detail)
            self._error = f"error event in the stream: {str(detail)[:200]}"
            return
        if isinstance(message, dict):
            self.content_chunks += _content_chunks(message)
            self.finish_reasons += _finish_reasons(message)
            reported = reported_output_tokens(message)
            if reported is not None:
                self._usage_tokens = reported


def read_stream(payload: bytes) -> StreamOutcome:
    """A whole stream's outcome, for a client that read it all at once."""
    reader = StreamReader()
    reader.feed(payload)
    return reader.finish()


# --- the load --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoadPlan:
    model: str
    clients: Mapping[str, str]
    """client name -> the region it sits in."""
    workload: WorkloadConfig = REALISTIC
    """What a client without a workload of its own sends."""
    client_workloads: Mapping[str, WorkloadConfig] = field(default_factory=dict)
    """client name -> its own workload (the topology's `clients.<name>.workload`)."""
    workers_per_client: int = 6
    think_ms: float = 40.0
    max_requests_per_worker: int = 5000
    seed: int = 0
    """With the worker's name, seeds its draws: the same plan sends the same sequence of requests."""

    def workload_of(self, client: str) -> WorkloadConfig:
        return self.client_workloads.get(client, self.workload)


def plan_for_stack(stack: Mapping[str, Any], overrides: WorkloadOverrides = NO_OVERRIDES,
                   **settings: Any) -> LoadPlan:
    """The clients of stack.json (one per region when the topology names none), each with its workload and
    the overrides applied, on the first model of the stack; `settings` are further LoadPlan fields."""
    models = sorted({str(b["model"]) for b in stack["backends"].values()})
    named = dict(stack.get("clients") or {})
    clients = {name: str(c["region"]) for name, c in named.items()} or {
        f"client-{region}": region for region in stack["routers"]}
    workloads = {name: overrides.apply(WorkloadConfig.model_validate(c.get("workload") or {}))
                 for name, c in named.items()}
    return LoadPlan(model=models[0], clients=clients, workload=overrides.apply(REALISTIC),
                    client_workloads=workloads, **settings)


@dataclass(slots=True)
class _Answer:
    """What one request's response showed, filled in as it is read."""

    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    ttft_ms: float | None = None
    output_tokens: int | None = None
    finish_reasons: int | None = None
    resumes: int = 0


class LoadRecorder:
    """Runs the plan's workers until `stop` is set and keeps every request's record."""

    def __init__(self, plan: LoadPlan, stack: Mapping[str, object], clock: Callable[[], float]) -> None:
        self._plan = plan
        self._stack = stack
        self._clock = clock
        self.records: list[RequestRecord] = []
        self.router_regions = {str(url).rstrip("/"): str(region)
                               for region, urls in stack["routers"].items()  # type: ignore[attr-defined]
                               for url in urls}

    async def run(self, stop: asyncio.Event) -> None:
        await self._run_workers(self._plan.workers_per_client, None, "", stop)

    async def run_extra(self, workload: WorkloadConfig, workers_per_client: int, stop: asyncio.Event, *,
                        label: str) -> None:
        """More workers per client, each sending `workload`, recorded with the plan's until `stop`: a phase's
        extra traffic on top of the clients' own. `label` names the workers (and so seeds their draws)."""
        await self._run_workers(workers_per_client, workload, f"{label}-", stop)

    async def _run_workers(self, count: int, workload: WorkloadConfig | None, prefix: str,
                           stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            workers = []
            for client, region in sorted(self._plan.clients.items()):
                for index in range(count):
                    region_client = RegionClient(self._stack, location=region)
                    workers.append(self._worker(session, region_client, client, f"{client}-{prefix}{index + 1}",
                                                region, workload or self._plan.workload_of(client), stop))
            await asyncio.gather(*workers)

    async def _worker(self, session: aiohttp.ClientSession, client: RegionClient, client_name: str, name: str,
                      region: str, workload: WorkloadConfig, stop: asyncio.Event) -> None:
        rng = random.Random(f"{self._plan.seed}:{name}")
        try:
            await client.connect()
        except NoRouterError:
            pass
        for _ in range(self._plan.max_requests_per_worker):
            if stop.is_set():
                return
            shape = draw(workload, rng)
            await self._one(session, client, client_name, region, chat_body(self._plan.model, shape, rng),
                            shape.stream, shape.prompt_tokens)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._plan.think_ms / 1000)
            except TimeoutError:
                pass

    async def _one(self, session: aiohttp.ClientSession, client: RegionClient, client_name: str, region: str,
                   body: dict[str, object], stream: bool, prompt_tokens: int) -> None:
        router_url = client.current.url if client.current is not None else ""
        started = self._clock()
        perf = time.perf_counter()
        answer = _Answer()
        try:
            if not router_url:
                raise NoRouterError("no router chosen")
            async with session.post(f"{router_url}/v1/chat/completions", json=body) as response:
                answer.status, answer.headers = response.status, response.headers
                if response.status != 200:
                    answer.error = (await response.read())[:200].decode(errors="replace")
                elif stream:
                    await _read_streamed(response, answer, perf)
                else:
                    answer.output_tokens = reported_output_tokens(_json_or_none(await response.read()))
        except (aiohttp.ClientError, TimeoutError, NoRouterError, OSError) as failure:
            answer.error = f"{type(failure).__name__}: {failure}"
        latency_ms = (time.perf_counter() - perf) * 1000
        headers = answer.headers
        self.records.append(RequestRecord(
            started, self._clock(), client_name, region, self.router_regions.get(router_url, "?"), answer.status,
            latency_ms, headers.get("x-meridian-backend"), headers.get("x-meridian-region"),
            _int_header(headers, "x-meridian-table-version"), answer.error,
            _int_header(headers, "x-meridian-attempts"), headers.get("x-meridian-reason"),
            streamed=stream, ttft_ms=answer.ttft_ms, output_tokens=answer.output_tokens, prompt_tokens=prompt_tokens,
            requested_tokens=_int_or_none(body.get("max_tokens")), finish_reasons=answer.finish_reasons,
            resumes=answer.resumes))
        if answer.status == 0:
            try:
                await client.failover()
            except NoRouterError:
                pass


async def _read_streamed(response: aiohttp.ClientResponse, answer: _Answer, perf: float) -> None:
    reader = StreamReader()
    async for data in response.content.iter_any():
        reader.feed(data)
        if answer.ttft_ms is None and reader.content_chunks:
            answer.ttft_ms = (time.perf_counter() - perf) * 1000
    outcome = reader.finish()
    answer.error, answer.output_tokens = outcome.error, outcome.output_tokens
    answer.finish_reasons, answer.resumes = outcome.finish_reasons, outcome.resumes


def _json_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    return int(raw) if raw and raw.isdigit() else None
