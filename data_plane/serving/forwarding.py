"""Sends a request to its deployments in preference order and relays the answer.

The attempt plan says what to try next; a connection error, a timeout, or an answer whose status means the
deployment failed, is misconfigured or is saturated (`backend_answer`), before the first byte reaches the
client, moves on to the next candidate, within `max_attempts` and the request's deadline; a client error
(400, 413, 422...) reaches the client as the backend sent it. A stream cut after its first byte is continued
by the next candidate in the same client stream, or ended with an error event (`stream_resume`). Every attempt
ends in one Outcome, applied in one place (`outcome.OutcomeRecorder`). Cancelling the handler (the client went
away) closes the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from data_plane.errors import ClientError
from data_plane.limits.rate_limits import RateLimits
from data_plane.live_state import LiveDeployment, RouterState
from data_plane.metrics import RouterMetrics
from data_plane.policies import RouteRequest
from data_plane.policies.exclusion import Exclusion, ExclusionKind
from data_plane.policies.filters import capacity_exclusion, rate_limit_exclusion, saturation_exclusion
from data_plane.serving.answer_timing import overdue_after_ms
from data_plane.serving.attempt_plan import AttemptPlan, Ending
from data_plane.serving.backend_answer import AnswerMeaning, BackendAnswer, classify
from data_plane.serving.outcome import Outcome, OutcomeKind, OutcomeRecorder, UsageSink
from data_plane.serving.relay import PASSED_THROUGH_HEADERS, RetryableFailure, relay_stream, relay_whole
from data_plane.serving.request_shapes import ParsedRequest
from data_plane.serving.route_planning import ModelDecision
from data_plane.serving.stream_resume import Resumer, ResumeSettings, Resumption, StreamCut
from data_plane.serving.stream_stall import stall_timeout_s
from data_plane.serving.usage import COST_HEADER, usd
from data_plane.table.snapshot import DeploymentSpec
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    region: str
    max_attempts: int
    request_timeout_s: float
    connect_timeout_s: float
    resume: ResumeSettings = ResumeSettings()


class Saturated(ClientError):
    """Nothing was tried because every deployment that could serve is full or at its rate limit: the
    request may wait in the model's queue for a slot."""


def upstream_headers(spec: DeploymentSpec) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
    return headers


def _refusal(answer: BackendAnswer, body: bytes) -> str:
    """Why an answer made the attempt fall back, as the log and a final 503 show it. Only a failing backend's own
    words are quoted: a 401's may echo part of the key it refused."""
    if answer.meaning is AnswerMeaning.SERVER_FAILURE:
        return f"http_{answer.status} {body[:200].decode(errors='replace')}"
    return f"http_{answer.status} {answer.hint}"


class _OverdueVerdict:
    """Tells the breaker that a request is certainly slow at the moment it becomes so (a stream past the TTFT
    threshold without its first token, a capped whole answer past the thresholds' worst case): a backend stuck
    on its queue is judged in a second, not when its answers finally come."""

    __slots__ = ("_handle", "fired")

    def __init__(self, recorder: OutcomeRecorder, live: LiveDeployment, parsed: ParsedRequest, started: float,
                 streaming: bool) -> None:
        self.fired = False
        self._handle: asyncio.TimerHandle | None = None
        settings = live.breaker.settings
        after_ms = overdue_after_ms(streaming=streaming, ttft_threshold_ms=settings.ttft_p95_threshold_ms,
                                    tpot_threshold_ms=settings.tpot_p95_threshold_ms,
                                    rtt_ms=live.spec.added_latency_ms, max_tokens=parsed.max_output_tokens)
        if after_ms is not None:
            def fire() -> None:
                self.fired = True
                recorder.overdue(live, started, time.monotonic(), after_ms)

            self._handle = asyncio.get_running_loop().call_later(after_ms / 1000, fire)

    def answered(self) -> None:
        """The answer (for a stream, its first token) came: nothing is overdue any more."""
        if self._handle is not None:
            self._handle.cancel()


class Forwarder:
    def __init__(self, session: aiohttp.ClientSession, state: RouterState, metrics: RouterMetrics,
                 recorder: OutcomeRecorder, settings: ForwardSettings, *, rate_limits: RateLimits | None = None,
                 on_release: Callable[[str], None] | None = None) -> None:
        self._session = session
        self._rate_limits = rate_limits
        self._on_release = on_release
        self._recorder = recorder
        self._state = state
        self._metrics = metrics
        self._settings = settings
        self._resumer = Resumer(settings.resume, metrics, settings.region)

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
        plan = AttemptPlan(self._settings.max_attempts,
                           deadline if deadline is not None else time.monotonic() + self._settings.request_timeout_s)
        tokens = parsed.estimated_prompt_tokens
        last_model: ModelDecision | None = None
        resumption: Resumption | None = None  # the client's stream, once a backend cut it
        for model_decision, spec in candidates:
            if model_decision is not last_model:
                plan.saw_decision(model_decision.decision.saturated)
                last_model = model_decision
            if spec is None:
                continue
            if not plan.may_attempt(time.monotonic()):
                break
            live = self._state.live.get((model_decision.model.name, spec.name))
            if live is None:  # the table changed under this request
                continue
            # From here to stats.begin() in _attempt there is no await: the capacity and rate checks and
            # the slot taken are one step of the event loop, so no deployment ever goes above its limits.
            now = time.monotonic()
            blocked = self._blocked(live, tokens, now)
            if blocked is not None:
                if blocked.kind is ExclusionKind.RATE_LIMITED:
                    self._metrics.rate_limited.labels(self._settings.region, live.model, "deployment").inc()
                plan.blocked(spec.name, blocked)
                continue
            decision = model_decision.decision
            # The panic pick serves although its breaker is open: every deployment of the model is out.
            if not decision.panic:
                admitted, transition = live.breaker.admit(now)
                self._recorder.report(live, transition)
                if not admitted:
                    continue
            if self._rate_limits is not None and (spec.rpm_limit or spec.tpm_limit):
                self._rate_limits.take_deployment(live.model, spec.name, tokens, now)
            if on_admit is not None and not plan.tried:
                on_admit()
            attempt = plan.attempt(spec.name)
            self._count_pick(model_decision, spec)
            headers = {
                **response_headers,
                "x-meridian-backend": spec.name,
                "x-meridian-region": spec.region,
                "x-meridian-policy": model_decision.request.policy,
                "x-meridian-reason": decision.reason if spec is decision.ordered[0] else plan.fallback_note(),
                "x-meridian-attempts": str(attempt),
            }
            if model_decision.model.name != parsed.model:
                headers["x-meridian-model"] = model_decision.model.name
            try:
                return await self._attempt(request, parsed, model_decision.request, live, headers, plan.deadline,
                                           tokens, on_usage if resumption is None else resumption.charging(on_usage),
                                           resumption)
            except StreamCut as cut:
                resumption = cut.resumption
                plan.failed(spec.name, f"stream cut ({resumption.cut.reason})")
                if not resumption.continues:
                    return await resumption.end(on_usage)
            except RetryableFailure as failure:
                plan.failed(spec.name, failure.code)
                self._metrics.fallbacks.labels(self._settings.region, live.model, spec.name, spec.architecture,
                                               failure.code).inc()
                # Misconfigured and saturated answers are logged by the outcome recorder, once per change.
                if failure.answer is None or failure.answer.meaning is AnswerMeaning.SERVER_FAILURE:
                    log.info(event("attempt_failed", model=live.model, deployment=spec.name,
                                   reason=failure.reason, attempt=attempt))
        if resumption is not None:
            return await resumption.end(on_usage, f"no deployment was left to continue it ({plan.summary()})")
        raise self._exhausted(plan, parsed, last_model, response_headers)

    def _blocked(self, live: LiveDeployment, tokens: int, now: float) -> Exclusion | None:
        spec, limits = live.spec, self._rate_limits
        return (saturation_exclusion(live.saturation(now))
                or capacity_exclusion(live.stats.in_flight, spec.max_concurrency)
                or (rate_limit_exclusion(limits.deployment_block(live.model, spec.name, tokens, now))
                    if limits is not None and (spec.rpm_limit or spec.tpm_limit) else None))

    def _count_pick(self, model_decision: ModelDecision, spec: DeploymentSpec) -> None:
        decision, labels = model_decision.decision, (self._settings.region, model_decision.model.name, spec.name)
        if decision.panic:
            self._metrics.panic_routed.labels(*labels).inc()
            log.warning(event("panic_routed", model=model_decision.model.name, deployment=spec.name,
                              reason=decision.reason))
        elif decision.trial == spec.name:
            self._metrics.trials.labels(*labels).inc()

    def _exhausted(self, plan: AttemptPlan, parsed: ParsedRequest, last_model: ModelDecision | None,
                   response_headers: dict[str, str]) -> ClientError:
        if plan.ending is Ending.BUSY:
            return Saturated(503, f"every deployment of model {parsed.model!r} is busy ({plan.last_failure})",
                             code="all_deployments_busy", headers={**response_headers, "Retry-After": "1"})
        model = last_model.model if last_model else self._state.table.models[parsed.model]
        retry_after = max(1, math.ceil(model.breaker.open_duration_s)) if plan.tried else 1
        self._metrics.requests.inc((self._settings.region, parsed.model, "none", "none",
                                    last_model.request.policy if last_model else "none", "503"))
        return ClientError(503, f"no healthy deployment could serve model {parsed.model!r} ({plan.summary()})",
                           code="no_healthy_deployment",
                           headers={**response_headers, "Retry-After": str(retry_after)})

    async def _attempt(self, request: web.Request | None, parsed: ParsedRequest, route_request: RouteRequest,
                       live: LiveDeployment, headers: dict[str, str], deadline: float, tokens: int,
                       on_usage: UsageSink | None, resumption: Resumption | None) -> web.StreamResponse:
        """With `resumption`, continues that client's stream (raises RetryableFailure on any answer but a 200)."""
        spec = live.spec
        streaming = request is not None and parsed.streaming
        body = (resumption.body_for(spec) if resumption is not None else
                parsed.body.for_model(spec.served_model, ask_usage=streaming and parsed.asks_backend_usage))
        timeout = aiohttp.ClientTimeout(total=max(0.001, deadline - time.monotonic()),
                                        sock_connect=self._settings.connect_timeout_s)
        started = time.monotonic()
        size = self._state.send_size(live, route_request.estimated_input_tokens, route_request.expected_output_tokens,
                                     route_request.prefix_blocks, started)
        if live.prefixes is not None:
            live.prefixes.sent(size.prompt_tokens, size.prompt_tokens - size.uncached_prompt_tokens)
            live.prefixes.remember(route_request.prefix_blocks)
        live.stats.begin(started, awaiting_first_token=streaming)
        # What the attempt came to, made one Outcome when it ends; still ABANDONED when the handler is cancelled
        # (the client went away), which says nothing about the backend.
        kind, answer, usage, first_token_at = OutcomeKind.ABANDONED, None, None, None
        overdue = _OverdueVerdict(self._recorder, live, parsed, started, streaming)
        try:
            async with self._session.post(f"{spec.url}/{parsed.endpoint}", data=body,
                                          headers=upstream_headers(spec), timeout=timeout) as upstream:
                answer = classify(upstream.status, upstream.headers.get("Retry-After"), now_unix=time.time())
                if answer.meaning.falls_back or (resumption is not None and upstream.status != 200):
                    kind = OutcomeKind.ANSWERED
                    raise RetryableFailure(_refusal(answer, await upstream.read()), answer)
                for name in PASSED_THROUGH_HEADERS:
                    if name in upstream.headers:
                        headers.setdefault(name, upstream.headers[name])
                if request is not None and streaming and upstream.status == 200:
                    def first_token(_: float) -> None:
                        live.stats.first_token(started)
                        overdue.answered()

                    stall_s = stall_timeout_s(live.stats.recent_tpot.value(started) or spec.tpot_ms,
                                              self._settings.resume.stall)
                    resumed = resumption.begin(live, time.monotonic()) if resumption is not None else None
                    relayed = await relay_stream(request, parsed, upstream, headers, time.monotonic, first_token,
                                                 stall_s=stall_s, resumed=resumed)
                    kind = (OutcomeKind.ABANDONED if relayed.client_gone else OutcomeKind.STREAM_BROKEN
                            if relayed.cut else OutcomeKind.ANSWERED)
                    if kind is not OutcomeKind.ANSWERED:
                        log.info(event("stream_ended_early", model=live.model, deployment=spec.name, outcome=kind,
                                       cut=relayed.cut.reason if relayed.cut else None,
                                       error=relayed.cut.detail if relayed.cut else None))
                    usage, first_token_at = relayed.usage, relayed.first_token_at
                    if relayed.cut is not None:
                        raise self._resumer.cut(resumption, parsed, relayed, live, relayed.cut, time.monotonic())
                    return relayed.response
                response, usage = await relay_whole(parsed, upstream, headers)
                kind = OutcomeKind.ANSWERED
                if answer.meaning is AnswerMeaning.OK:
                    response.headers[COST_HEADER] = usd(usage.cost(spec.cost_per_1m_input, spec.cost_per_1m_output))
                return response
        except RetryableFailure as failure:
            if failure.answer is None:  # a stream closed before its first byte: the backend is up, and failing
                kind = OutcomeKind.FAILED
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            kind = OutcomeKind.UNREACHABLE
            raise RetryableFailure(f"{type(error).__name__} {error}".strip()) from error
        finally:
            overdue.answered()
            answered = answer if kind is OutcomeKind.ANSWERED else None
            self._recorder.apply(live, Outcome(kind, started, time.monotonic(), answered, usage, first_token_at,
                                               tokens, overdue.fired, size),
                                 policy=headers["x-meridian-policy"], on_usage=on_usage)
            if self._on_release is not None:
                self._on_release(live.model)
