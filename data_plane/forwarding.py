"""Sends a request to its deployments in preference order and relays the answer.

A connection error, timeout or 5xx before the first byte reaches the client moves on to the next
candidate, within `max_attempts` and the request's deadline. Streams are relayed chunk by chunk as they
arrive; once a byte has reached the client nothing is retried. Cancelling the handler (the client went
away) closes the upstream request.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from data_plane.breaker import Transition
from data_plane.errors import ClientError
from data_plane.live_state import LiveDeployment, RouterState
from data_plane.metrics import BREAKER_STATE_VALUES, RouterMetrics
from data_plane.policies.filters import capacity_reason
from data_plane.rate_limits import RateLimits
from data_plane.request_parsing import ParsedRequest
from data_plane.route_planning import ModelDecision, saturated
from data_plane.sse_usage import StreamUsageScanner
from data_plane.table import DeploymentSpec
from data_plane.telemetry_accumulator import TelemetryAccumulators
from data_plane.usage import Usage, completion_text, estimate_tokens, normalise, reported_usage
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

_PASSED_THROUGH_HEADERS = ("Content-Type", "openai-processing-ms", "x-request-id")


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    region: str
    max_attempts: int
    request_timeout_s: float
    connect_timeout_s: float


class _RetryableFailure(Exception):
    """The attempt failed before any byte reached the client: the next candidate may take it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Saturated(ClientError):
    """Nothing was tried because every deployment that could serve is full or at its rate limit: the
    request may wait in the model's queue for a slot."""


UsageSink = Callable[[Usage], None]


def _labels(region: str, model: str, spec: DeploymentSpec) -> tuple[str, str, str, str]:
    return region, model, spec.name, spec.architecture


def _abandon(live: LiveDeployment, started: float) -> None:
    live.stats.abandon(started)
    live.breaker.abandon(time.monotonic())


def upstream_headers(spec: DeploymentSpec) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
    return headers


class Forwarder:
    def __init__(self, session: aiohttp.ClientSession, state: RouterState, metrics: RouterMetrics,
                 telemetry: TelemetryAccumulators, settings: ForwardSettings, *,
                 rate_limits: RateLimits | None = None,
                 on_release: Callable[[str], None] | None = None) -> None:
        self._session = session
        self._rate_limits = rate_limits
        self._on_release = on_release
        self._telemetry = telemetry
        self._state = state
        self._metrics = metrics
        self._settings = settings

    def report_transition(self, live: LiveDeployment, transition: Transition | None) -> None:
        if transition is None:
            return
        labels = _labels(self._settings.region, live.model, live.spec)
        log.warning(event("breaker_transition", model=live.model, deployment=live.spec.name,
                          from_state=transition.from_state, to_state=transition.to_state,
                          reason=transition.reason))
        self._metrics.breaker_transitions.labels(*labels, transition.from_state, transition.to_state).inc()
        self._metrics.breaker_state.labels(*labels).set(BREAKER_STATE_VALUES[str(transition.to_state)])

    async def forward(
        self,
        request: web.Request | None,
        parsed: ParsedRequest,
        candidates: Iterator[tuple[ModelDecision, DeploymentSpec | None]],
        response_headers: dict[str, str],
        *,
        deadline: float | None = None,
        on_admit: Callable[[], None] | None = None,
        on_usage: UsageSink | None = None,
    ) -> web.StreamResponse:
        """Raises Saturated when no deployment was tried only because they were all busy."""
        if deadline is None:
            deadline = time.monotonic() + self._settings.request_timeout_s
        tried: list[str] = []
        last_failure = "no eligible deployment"
        last_model: ModelDecision | None = None
        busy = False
        tokens = estimate_tokens(parsed.prompt)
        limits = self._rate_limits
        for model_decision, spec in candidates:
            if model_decision is not last_model:
                busy = busy or saturated(model_decision)
            last_model = model_decision
            if spec is None:
                continue
            if len(tried) >= self._settings.max_attempts or time.monotonic() >= deadline:
                break
            live = self._state.live.get((model_decision.model.name, spec.name))
            if live is None:  # the table changed under this request
                continue
            # From here to stats.begin() in _attempt there is no await: the capacity and rate checks and
            # the slot taken are one step of the event loop, so no deployment ever goes above its limits.
            now = time.monotonic()
            blocked = capacity_reason(live.stats.in_flight, live.spec.max_concurrency) or (
                limits.deployment_block(live.model, spec.name, tokens, now)
                if limits is not None and (spec.rpm_limit or spec.tpm_limit) else None)
            if blocked is not None:
                if not blocked.startswith("at capacity"):
                    self._metrics.rate_limited.labels(self._settings.region, live.model, "deployment").inc()
                busy = True
                last_failure = f"{spec.name} {blocked}"
                continue
            admitted, transition = live.breaker.admit(now)
            self.report_transition(live, transition)
            if not admitted:
                continue
            if limits is not None and (spec.rpm_limit or spec.tpm_limit):
                limits.take_deployment(live.model, spec.name, tokens, now)
            if on_admit is not None and not tried:
                on_admit()
            tried.append(spec.name)
            headers = {
                **response_headers,
                "x-meridian-backend": spec.name,
                "x-meridian-region": spec.region,
                "x-meridian-policy": model_decision.request.policy,
                "x-meridian-reason": model_decision.decision.reason
                if spec is model_decision.decision.ordered[0] else f"fallback after {', '.join(tried[:-1])}",
                "x-meridian-attempts": str(len(tried)),
            }
            if model_decision.model.name != parsed.model:
                headers["x-meridian-model"] = model_decision.model.name
            try:
                return await self._attempt(request, parsed, live, headers, deadline, on_usage)
            except _RetryableFailure as failure:
                last_failure = f"{spec.name}: {failure.reason}"
                self._metrics.fallbacks.labels(
                    *_labels(self._settings.region, live.model, spec), failure.reason.split(" ")[0]).inc()
                log.info(event("attempt_failed", model=live.model, deployment=spec.name,
                               reason=failure.reason, attempt=len(tried)))
        if busy and not tried:
            raise Saturated(503, f"every deployment of model {parsed.model!r} is busy ({last_failure})",
                            code="all_deployments_busy", headers={**response_headers, "Retry-After": "1"})
        model = last_model.model if last_model else self._state.table.models[parsed.model]
        retry_after = max(1, math.ceil(model.breaker.open_duration_s)) if tried else 1
        self._metrics.requests.labels(self._settings.region, parsed.model, "none", "none",
                                      last_model.request.policy if last_model else "none", "503").inc()
        raise ClientError(
            503,
            f"no healthy deployment could serve model {parsed.model!r}"
            + (f" (tried {', '.join(tried)}; last error: {last_failure})" if tried else f" ({last_failure})"),
            code="no_healthy_deployment",
            headers={**response_headers, "Retry-After": str(retry_after)},
        )

    async def _attempt(self, request: web.Request | None, parsed: ParsedRequest, live: LiveDeployment,
                       headers: dict[str, str], deadline: float, on_usage: UsageSink | None
                       ) -> web.StreamResponse:
        spec = live.spec
        body = dict(parsed.body)
        body["model"] = spec.served_model
        timeout = aiohttp.ClientTimeout(total=max(0.001, deadline - time.monotonic()),
                                        sock_connect=self._settings.connect_timeout_s)
        labels = _labels(self._settings.region, live.model, spec)
        started = time.monotonic()
        live.stats.begin(started)
        self._metrics.bound(self._metrics.in_flight, *labels).inc()
        finished = False
        try:
            async with self._session.post(f"{spec.url}/{parsed.endpoint}", data=orjson.dumps(body),
                                          headers=upstream_headers(spec), timeout=timeout) as upstream:
                if upstream.status >= 500:
                    detail = (await upstream.read())[:200].decode(errors="replace")
                    raise _RetryableFailure(f"http_{upstream.status} {detail}")
                for name in _PASSED_THROUGH_HEADERS:
                    if name in upstream.headers:
                        headers.setdefault(name, upstream.headers[name])
                if request is not None and parsed.streaming and upstream.status == 200:
                    response = await self._relay_stream(request, parsed, live, upstream, headers, started,
                                                        on_usage)
                else:
                    response = await self._relay_whole(parsed, live, upstream, headers, started, on_usage)
                finished = True
                return response
        except _RetryableFailure:
            self._finish_failure(live, started, reachable=True)
            finished = True
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self._finish_failure(live, started, reachable=False)
            finished = True
            raise _RetryableFailure(f"{type(error).__name__} {error}".strip()) from error
        finally:
            self._metrics.bound(self._metrics.in_flight, *labels).dec()
            if not finished:  # cancelled: the client went away, which says nothing about the backend
                _abandon(live, started)
            if self._on_release is not None:
                self._on_release(live.model)

    def _finish_failure(self, live: LiveDeployment, started: float, *, reachable: bool) -> None:
        """Every failure counts against the breaker; only an unreachable backend against its health
        (a 5xx proves it is up)."""
        now = time.monotonic()
        latency_ms = (now - started) * 1000
        live.stats.end(now, started=started, latency_ms=latency_ms, ok=False)
        self._telemetry.record(live.model, live.spec.name, ok=False, latency_ms=latency_ms, ttft_ms=None,
                               input_tokens=0, output_tokens=0)
        self.report_transition(live, live.breaker.record(now, ok=False, latency_ms=latency_ms))
        if not reachable:
            live.health.record_live_failure()

    def _finish_success(self, live: LiveDeployment, parsed: ParsedRequest, started: float, status: int,
                        policy: str, usage: Usage, ttft_ms: float | None, on_usage: UsageSink | None) -> None:
        now = time.monotonic()
        if self._rate_limits is not None and live.spec.tpm_limit:
            self._rate_limits.settle_deployment(live.model, live.spec.name, estimate_tokens(parsed.prompt),
                                                usage.total_tokens, now)
        if on_usage is not None:
            on_usage(usage)
        latency_ms = (now - started) * 1000
        live.stats.end(now, started=started, latency_ms=latency_ms, ok=True, ttft_ms=ttft_ms,
                       output_tokens=usage.completion_tokens)
        self._telemetry.record(live.model, live.spec.name, ok=True, latency_ms=latency_ms, ttft_ms=ttft_ms,
                               input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
        self.report_transition(live, live.breaker.record(now, ok=True, latency_ms=latency_ms))
        live.health.record_live_success()
        spec = live.spec
        labels = _labels(self._settings.region, live.model, spec)
        metrics = self._metrics
        metrics.bound(metrics.requests, *labels, policy, str(status)).inc()
        metrics.bound(metrics.latency, *labels).observe(latency_ms / 1000)
        if ttft_ms is not None:
            metrics.bound(metrics.ttft, *labels).observe(ttft_ms / 1000)
        source = "estimated" if usage.estimated else "reported"
        metrics.bound(metrics.tokens, *labels, "input", source).inc(usage.prompt_tokens)
        metrics.bound(metrics.tokens, *labels, "output", source).inc(usage.completion_tokens)
        metrics.bound(metrics.cost, *labels).inc(usage.cost(spec.cost_per_1m_input, spec.cost_per_1m_output))

    async def _relay_whole(self, parsed: ParsedRequest, live: LiveDeployment,
                           upstream: aiohttp.ClientResponse, headers: dict[str, str],
                           started: float, on_usage: UsageSink | None) -> web.Response:
        payload = await upstream.read()
        usage = Usage(estimate_tokens(parsed.prompt), 0, estimated=True)
        if upstream.status == 200 and upstream.content_type == "application/json":
            try:
                document: Any = orjson.loads(payload)
            except orjson.JSONDecodeError:
                document = None
            if isinstance(document, dict):
                usage = normalise(reported_usage(document), parsed.prompt, completion_text(document))
                if "usage" not in document and parsed.endpoint != "embeddings":
                    document["usage"] = usage.as_openai()
                    payload = orjson.dumps(document)
        headers["x-meridian-usage"] = "estimated" if usage.estimated else "reported"
        self._finish_success(live, parsed, started, upstream.status, headers["x-meridian-policy"], usage, None,
                             on_usage)
        headers.pop("Content-Type", None)
        return web.Response(status=upstream.status, body=payload, headers=headers,
                            content_type=upstream.content_type)

    async def _relay_stream(self, request: web.Request, parsed: ParsedRequest, live: LiveDeployment,
                            upstream: aiohttp.ClientResponse, headers: dict[str, str],
                            started: float, on_usage: UsageSink | None) -> web.StreamResponse:
        first = await upstream.content.readany()
        if not first:
            raise _RetryableFailure("empty_stream backend closed the stream before the first byte")
        ttft_ms = (time.monotonic() - started) * 1000
        scanner = StreamUsageScanner()
        scanner.feed(first)
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "text/event-stream"
        await response.prepare(request)
        try:
            await response.write(first)
            async for chunk in upstream.content.iter_any():
                scanner.feed(chunk)
                await response.write(chunk)
        except ConnectionResetError:
            _abandon(live, started)
            log.info(event("client_gone", model=live.model, deployment=live.spec.name))
            return response
        except (aiohttp.ClientError, TimeoutError) as error:
            # Bytes already reached the client, so no retry: end the stream with an error event.
            self._finish_failure(live, started, reachable=False)
            log.warning(event("stream_broken", model=live.model, deployment=live.spec.name,
                              error=type(error).__name__))
            message = f"the backend stream broke after it started: {type(error).__name__}"
            await response.write(b"data: " + orjson.dumps(
                {"error": {"message": message, "type": "api_error", "param": None, "code": "stream_broken"}}
            ) + b"\n\n")
            return response
        await response.write_eof()
        usage = Usage(*(scanner.reported or (estimate_tokens(parsed.prompt), scanner.content_chunks)),
                      estimated=scanner.reported is None)
        self._finish_success(live, parsed, started, 200, headers["x-meridian-policy"], usage, ttft_ms, on_usage)
        return response
