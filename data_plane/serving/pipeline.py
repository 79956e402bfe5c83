"""Serves a parsed OpenAI request the way every entry point does (client limits, cache, the model's queue,
forwarding): the endpoints call it with the client's request, asynchronous jobs without one."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDictProxy

from data_plane.auth import keyed, metric_client
from data_plane.errors import ClientError
from data_plane.limits.admission_queue import DEFAULT_QUEUE_PRIORITY, QUEUE_PRIORITIES
from data_plane.limits.waiting_room import QUEUED, QueueRejected, Ticket, WaitingRooms
from data_plane.live_state import RouterState
from data_plane.metrics import RouterMetrics
from data_plane.policies import RouteRequest
from data_plane.serving.forwarding import Forwarder, Saturated
from data_plane.serving.outcome import Settled, UsageSink
from data_plane.serving.request_shapes import PROMPT_FIELD, ParsedRequest
from data_plane.serving.response_cache import CachedResponse, ResponseCache, cache_key, should_cache
from data_plane.serving.route_planning import ModelDecision, attempts, model_chain, refuse_too_long
from data_plane.serving.usage import COST_HEADER
from data_plane.table.snapshot import DeploymentSpec, ModelSpec

QUEUE_PRIORITY_HEADER = "x-meridian-queue-priority"
DEADLINE_HEADER = "x-meridian-deadline-ms"
QUEUE_WAIT_HEADER = "x-meridian-queue-wait-ms"


@dataclass(frozen=True, slots=True)
class Serving:
    """What serving a parsed request uses, built once at start-up when the forwarder and the cache exist."""

    region: str
    request_timeout_s: float
    state: RouterState
    metrics: RouterMetrics
    queues: WaitingRooms
    forwarder: Forwarder
    cache: ResponseCache


def request_deadline(headers: Mapping[str, str], started: float, timeout_s: float) -> float:
    text = headers.get(DEADLINE_HEADER)
    if text is None:
        return started + timeout_s
    try:
        deadline_ms = float(text)
    except ValueError:
        deadline_ms = -1.0
    if not (deadline_ms > 0 and math.isfinite(deadline_ms)):
        raise ClientError(400, f"{DEADLINE_HEADER} must be a positive number of milliseconds, got {text!r}",
                          param=DEADLINE_HEADER, code="invalid_deadline")
    return started + min(timeout_s, deadline_ms / 1000)


def queue_priority(headers: Mapping[str, str]) -> int:
    name = headers.get(QUEUE_PRIORITY_HEADER, DEFAULT_QUEUE_PRIORITY)
    if name not in QUEUE_PRIORITIES:
        raise ClientError(400, f"unknown queue priority {name!r} in {QUEUE_PRIORITY_HEADER}; expected one of "
                          f"{', '.join(QUEUE_PRIORITIES)}", param=QUEUE_PRIORITY_HEADER, code="invalid_priority")
    return QUEUE_PRIORITIES.index(name)


def _client_limited(serving: Serving, model: ModelSpec) -> bool:
    return serving.state.rate_limits is not None and bool(model.client_rpm or model.client_tpm)


def charge_client(serving: Serving, identity: str, model: ModelSpec, tokens: int, headers: dict[str, str]) -> None:
    """Charges the client's buckets for a request of `tokens` estimated prompt tokens (adding the x-ratelimit-*
    headers), or raises 429; nothing when the model has no client limits."""
    limits = serving.state.rate_limits
    if limits is None or not _client_limited(serving, model):
        return
    verdict = limits.check_client(model.name, identity, tokens, time.monotonic())
    headers.update(verdict.headers)
    if verdict.allowed:
        return
    serving.metrics.rate_limited.labels(serving.region, model.name, "client").inc()
    wait_s = verdict.retry_after_s
    raise ClientError(
        429, f"rate limit reached for model {model.name!r} ({verdict.reason} per client key); "
        f"retry in {wait_s:.2f} s", code="rate_limit_exceeded",
        headers={**headers, "Retry-After": str(max(1, math.ceil(wait_s))), "retry-after-ms": str(int(wait_s * 1000))},
    )


async def _forward_through_queue(serving: Serving, request: web.Request | None, parsed: ParsedRequest,
                                 chain: list[tuple[ModelSpec, RouteRequest]], request_headers: Mapping[str, str],
                                 headers: dict[str, str], deadline: float, on_usage: UsageSink
                                 ) -> web.StreamResponse:
    """Forwards, and when every deployment is busy waits in the model's queue for a slot, deciding again
    each time one frees. Newcomers queue behind anyone already waiting."""
    forwarder = serving.forwarder
    model = chain[0][0]
    room = serving.queues.get(model.name)
    priority = queue_priority(request_headers)
    ticket: Ticket | None = None
    metrics = serving.metrics

    def observed(chain_attempts: Iterator[tuple[ModelDecision, DeploymentSpec | None]]
                 ) -> Iterator[tuple[ModelDecision, DeploymentSpec | None]]:
        decided: set[str] = set()
        for model_decision, spec in chain_attempts:
            if model_decision.model.name not in decided:
                decided.add(model_decision.model.name)
                metrics.decision_time.observe((serving.region, model_decision.request.policy),
                                              model_decision.decision_s)
            yield model_decision, spec

    def admitted() -> None:
        if ticket is not None and room is not None:
            room.admitted(ticket)
            headers[QUEUE_WAIT_HEADER] = str(round((time.monotonic() - ticket.joined_at) * 1000, 1))

    try:
        while True:
            queueing = room is not None and room.size > 0
            if ticket is None and queueing and room is not None and room.busy():
                ticket = room.join(priority, time.monotonic(), headers)
            if ticket is not None and room is not None and ticket.state == QUEUED:
                await room.wait(ticket, min(deadline, ticket.joined_at + room.timeout_s), headers)
            try:
                return await forwarder.forward(request, parsed,
                                               observed(attempts(serving.state, chain)), headers,
                                               deadline=deadline, on_admit=admitted, on_usage=on_usage)
            except Saturated:
                if room is None or room.size <= 0:
                    raise
                if ticket is None:
                    ticket = room.join(priority, time.monotonic(), headers)
                else:
                    room.requeue(ticket)
    except (Saturated, QueueRejected) as error:
        metrics.queue_rejected.labels(serving.region, model.name, error.code or "busy").inc()
        metrics.requests.inc((serving.region, model.name, "none", "none", model.policy, "503"))
        raise
    finally:
        if ticket is not None and room is not None:
            room.leave(ticket)


async def serve_parsed(serving: Serving, parsed: ParsedRequest, request_headers: CIMultiDictProxy[str], *,
                       identity: str, request: web.Request | None, client_charged: bool = False
                       ) -> web.StreamResponse:
    """Serves a parsed request as the endpoint does (limits, cache, queue, forwarding) and returns the
    response; asynchronous jobs call it without a client request, for non-streamed requests only, and with
    `client_charged`: their client's limits were charged when the job was submitted."""
    if request is None and parsed.streaming:
        raise ValueError("a streamed request needs the client's request to stream to")
    endpoint = parsed.endpoint
    started = time.monotonic()
    chain = model_chain(serving.state, parsed, request_headers)
    refuse_too_long(chain, PROMPT_FIELD[endpoint])
    primary = chain[0][0]
    deadline = request_deadline(request_headers, started, serving.request_timeout_s)
    base_headers = {"x-meridian-table-version": str(serving.state.table.version)}
    prompt_tokens = parsed.estimated_prompt_tokens
    if not client_charged:
        charge_client(serving, identity, primary, prompt_tokens, base_headers)
    identity_limited = identity if _client_limited(serving, primary) else None
    client = metric_client(identity)

    def settle(settled: Settled) -> None:
        """The client's share of an answer: its cost, and its tokens against its limits."""
        metrics = serving.metrics
        metrics.client_cost.inc((serving.region, settled.model, client), settled.cost_usd)
        limits = serving.state.rate_limits
        if identity_limited is not None and limits is not None:
            limits.settle_client(primary.name, identity_limited, prompt_tokens, settled.usage.total_tokens,
                                 time.monotonic())

    key = None
    if endpoint != "embeddings" and should_cache(parsed, request_headers, model_opted_in=primary.cache_enabled):
        key = cache_key(parsed, identity if keyed(identity) else "")
        hit = await serving.cache.lookup(key)
        serving.metrics.cache.labels(serving.region, primary.name, "hit" if hit else "miss").inc()
        if hit is not None:
            return web.Response(status=hit.status, body=hit.body, content_type=hit.content_type,
                                headers={**base_headers, "x-meridian-cache": "hit", COST_HEADER: "0"})
        base_headers["x-meridian-cache"] = "miss"
    response = await _forward_through_queue(serving, request, parsed, chain, request_headers, base_headers,
                                            deadline, settle)
    if key is not None and isinstance(response, web.Response) and response.status == 200:
        assert response.body is not None
        serving.cache.store_later(key, CachedResponse(200, bytes(response.body), response.content_type),
                                  primary.cache_ttl_s)
    return response
