"""What one attempt on a deployment came to, as one value, and the one place it is applied: statistics,
circuit breaker, health, telemetry, rate-limit settlement and metrics all learn of it here, in this order.
What a backend's status means (`backend_answer`) decides which of them count it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from data_plane.deployments.breaker import BreakerState, Transition, TripHeld
from data_plane.deployments.health import HealthChange
from data_plane.deployments.latency_model import RequestSize
from data_plane.limits.rate_limits import RateLimits
from data_plane.live_state import LiveDeployment, RouterState
from data_plane.metrics import BREAKER_STATE_VALUES, RouterMetrics
from data_plane.policies.prediction import NO_PRIORS, Known, Prediction, known_figures, predict
from data_plane.serving.answer_timing import AnswerTiming, slowness, streamed_timing, whole_answer_timing
from data_plane.serving.backend_answer import AnswerMeaning, BackendAnswer
from data_plane.serving.usage import Usage
from data_plane.telemetry.accumulator import TelemetryAccumulators
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settled:
    """What an answered request used and what it cost at the prices of the deployment that served it."""

    model: str  # the model that served: a fallback's name when one did
    usage: Usage
    cost_usd: float


UsageSink = Callable[[Settled], None]


class OutcomeKind(StrEnum):
    ANSWERED = "answered"  # the backend answered with a status; `answer` says what it means
    FAILED = "failed"  # the backend closed a stream before its first byte: it is up, and failing
    UNREACHABLE = "unreachable"  # connection refused or reset, or a timeout, before any byte reached the client
    STREAM_BROKEN = "stream broken"  # the stream broke after bytes reached the client
    ABANDONED = "abandoned"  # the client went away: no verdict on the backend


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    started: float  # monotonic seconds
    ended: float
    answer: BackendAnswer | None = None  # ANSWERED only
    usage: Usage | None = None  # answers only
    first_token_at: float | None = None  # streams only: when their first byte arrived
    estimated_prompt_tokens: int = 0  # what the rate limits were charged before the answer
    breaker_judged: bool = False  # the breaker already counted it slow: it was overdue
    size: RequestSize | None = None  # the request and the engine's load when it was sent: what the answer teaches

    def __post_init__(self) -> None:
        if (self.kind is OutcomeKind.ANSWERED) != (self.answer is not None):
            raise ValueError(f"an outcome has an answer exactly when it is {OutcomeKind.ANSWERED.value!r}, got "
                             f"kind {self.kind.value!r} with answer {self.answer}")

    @property
    def total_ms(self) -> float:
        return max(0.0, (self.ended - self.started) * 1000)

    @property
    def status(self) -> int:
        return self.answer.status if self.answer is not None else 0


def _slowness(live: LiveDeployment, timing: AnswerTiming) -> str | None:
    settings = live.breaker.settings
    return slowness(timing, ttft_threshold_ms=settings.ttft_p95_threshold_ms,
                    tpot_threshold_ms=settings.tpot_p95_threshold_ms, rtt_ms=live.spec.added_latency_ms)


def _labels(region: str, live: LiveDeployment) -> tuple[str, str, str, str]:
    return region, live.model, live.spec.name, live.spec.architecture


def report_health(metrics: RouterMetrics, region: str, live: LiveDeployment, change: HealthChange | None) -> None:
    """A deployment's health changed (through a probe or a live answer): logged with why, and its gauge set."""
    if change is None:
        return
    log.warning(event("health_changed", model=live.model, deployment=live.spec.name, healthy=live.health.healthy,
                      reason=change.reason))
    metrics.health_state.labels(*_labels(region, live)).set(1 if live.health.healthy else 0)


def prediction(live: LiveDeployment, size: RequestSize, known: Known, now: float) -> Prediction:
    """What the size model predicts for a request of `size` from `known` (the size-blind figures)."""
    return predict(known, live.spec, NO_PRIORS, size, live.latency_model.view(now))


def learn_timing(live: LiveDeployment, size: RequestSize, known: Known, predicted: Prediction, now: float, *,
                 ttft_ms: float | None, tpot_ms: float | None) -> None:
    """Teaches the deployment's size model an answer's timing (a live answer's or a probe's), with what was
    `predicted` for it from `known` (the size-blind figures before it) to keep the prediction's error."""
    live.latency_model.learn(size, now, ttft_ms=ttft_ms, tpot_ms=tpot_ms,
                             predicted=(predicted.ttft_ms, predicted.tpot_ms), baseline=(known.ttft_ms, known.tpot_ms))


class OutcomeRecorder:
    def __init__(self, state: RouterState, metrics: RouterMetrics, telemetry: TelemetryAccumulators, region: str,
                 rate_limits: RateLimits | None = None) -> None:
        self._state = state
        self._metrics = metrics
        self._telemetry = telemetry
        self._region = region
        self._rate_limits = rate_limits

    def report(self, live: LiveDeployment, change: Transition | TripHeld | None) -> None:
        if change is None:
            return
        labels = _labels(self._region, live)
        if isinstance(change, TripHeld):
            log.warning(event("breaker_trip_held", model=live.model, deployment=live.spec.name, reason=change.reason))
            self._metrics.breaker_trips_held.labels(*labels).inc()
            return
        log.warning(event("breaker_transition", model=live.model, deployment=live.spec.name,
                          from_state=change.from_state, to_state=change.to_state, reason=change.reason))
        self._metrics.breaker_transitions.labels(*labels, change.from_state, change.to_state).inc()
        self._metrics.breaker_state.labels(*labels).set(BREAKER_STATE_VALUES[str(change.to_state)])

    def overdue(self, live: LiveDeployment, started: float, now: float, waited_ms: float) -> None:
        """A request unanswered past the point where it is certainly slow (`answer_timing.overdue_after_ms`):
        the breaker hears it now, from a backend stuck on its queue, rather than when the answer finally comes;
        the outcome then skips the breaker."""
        reason = f"no answer after {waited_ms:.0f}ms: over the ttft and tpot thresholds"
        self.report(live, live.breaker.record(now, ok=True, slow=reason, started=started,
                                              may_open=self._state.may_open(live.model, live.spec.name, now)))

    def probe_verdict(self, live: LiveDeployment, timing: AnswerTiming, now: float) -> None:
        """A health probe's streamed answer is a half-open breaker's trial when no client's request is: it
        measures TTFT and TPOT, so no client pays for trying a backend that may still be slow."""
        breaker = live.breaker
        if breaker.state_at(now) is not BreakerState.HALF_OPEN:
            return
        admitted, transition = breaker.admit(now)
        self.report(live, transition)
        if admitted:
            self.report(live, breaker.record(now, ok=True, slow=_slowness(live, timing)))

    def apply(self, live: LiveDeployment, outcome: Outcome, *, policy: str,
              on_usage: UsageSink | None = None) -> None:
        answer = outcome.answer
        if answer is None:
            if outcome.kind is OutcomeKind.ABANDONED:
                self._no_verdict(live, outcome)
            else:
                # A stream closed before its first byte proves the backend is up: only an unreachable one (or a
                # stream cut) counts against its health.
                self._failed(live, outcome, None if outcome.kind is OutcomeKind.FAILED else str(outcome.kind))
            return
        meaning = answer.meaning
        if meaning is AnswerMeaning.OK:
            self._answered(live, outcome, answer, policy, on_usage)
        elif meaning is AnswerMeaning.CLIENT_ERROR:
            # The request was at fault: the client has the backend's answer, which says nothing of the backend.
            self._no_verdict(live, outcome)
            self._metrics.requests.inc((*_labels(self._region, live), policy, str(answer.status)))
        elif meaning is AnswerMeaning.SATURATED:
            # Saturation is not brokenness: no breaker or health verdict, only no request until its Retry-After.
            self._no_verdict(live, outcome)
            self._saturated(live, outcome.ended, answer)
        elif meaning is AnswerMeaning.MISCONFIGURED:
            self._misconfigured(live, answer)
            self._failed(live, outcome, f"answered {answer.status} ({meaning})")
        else:
            self._failed(live, outcome, None)  # a failure of a backend that is up: the breaker's business

    def _no_verdict(self, live: LiveDeployment, outcome: Outcome) -> None:
        live.stats.abandon(outcome.started)
        live.breaker.abandon(outcome.started)

    def _failed(self, live: LiveDeployment, outcome: Outcome, health_failure: str | None) -> None:
        """A failure for the breaker and the error rate; with `health_failure`, for health too."""
        now, latency_ms = outcome.ended, outcome.total_ms
        if not outcome.breaker_judged:
            self.report(live, live.breaker.record(now, ok=False, started=outcome.started,
                                                  may_open=self._state.may_open(live.model, live.spec.name, now)))
        live.stats.end(now, started=outcome.started, ok=False, latency_ms=latency_ms)
        self._telemetry.record(live.model, live.spec.name, ok=False, latency_ms=latency_ms)
        if health_failure is not None:
            report_health(self._metrics, self._region, live, live.health.record_live_failure(health_failure))

    def _saturated(self, live: LiveDeployment, now: float, answer: BackendAnswer) -> None:
        until = now + answer.retry_after_s
        if until <= live.saturated_until:
            return
        if now >= live.saturated_until:  # logged when a pause starts, not each time one is extended
            log.warning(event("deployment_saturated", model=live.model, deployment=live.spec.name,
                              status=answer.status, retry_after_s=round(answer.retry_after_s, 3)))
        live.saturated_until = until

    def _misconfigured(self, live: LiveDeployment, answer: BackendAnswer) -> None:
        # Once per deployment and status, not per request: a wrong key would otherwise log every request.
        if live.misconfigured_status != answer.status:
            live.misconfigured_status = answer.status
            log.warning(event("deployment_misconfigured", model=live.model, deployment=live.spec.name,
                              status=answer.status, hint=answer.hint))

    @staticmethod
    def timing(outcome: Outcome, completion_tokens: int, known: Known, predicted: Prediction | None) -> AnswerTiming:
        """The answer's TTFT and TPOT: measured on a stream; for a whole answer, its TTFT is what was `predicted`
        for this request's size (`known`: the size-blind figures before this answer)."""
        if outcome.first_token_at is not None:
            return streamed_timing(outcome.total_ms, (outcome.first_token_at - outcome.started) * 1000,
                                   completion_tokens)
        estimate = known.ttft_ms
        if estimate is not None and predicted is not None:
            estimate = predicted.ttft_ms
        return whole_answer_timing(outcome.total_ms, completion_tokens, estimate)

    def _answered(self, live: LiveDeployment, outcome: Outcome, answer: BackendAnswer, policy: str,
                  on_usage: UsageSink | None) -> None:
        usage = outcome.usage or Usage(outcome.estimated_prompt_tokens, 0, estimated=True)
        now, latency_ms, spec = outcome.ended, outcome.total_ms, live.spec
        if live.misconfigured_status:
            log.info(event("deployment_answering", model=live.model, deployment=spec.name,
                           after_status=live.misconfigured_status, status=answer.status))
            live.misconfigured_status = 0
        known = known_figures(live.stats.view(now), spec)
        # The size the answer turned out to have: one prediction for it serves the whole answer's TTFT estimate
        # and the size model's error.
        size = outcome.size._replace(output_tokens=usage.completion_tokens) if outcome.size is not None else None
        predicted = prediction(live, size, known, now) if size is not None else None
        timing = self.timing(outcome, usage.completion_tokens, known, predicted)
        if size is not None and predicted is not None:
            learn_timing(live, size, known, predicted, now,
                         ttft_ms=timing.ttft_ms if outcome.first_token_at is not None else None, tpot_ms=timing.tpot_ms)
        if not outcome.breaker_judged:
            self.report(live, live.breaker.record(now, ok=True, slow=_slowness(live, timing), started=outcome.started,
                                                  ttft_measured=outcome.first_token_at is not None,
                                                  may_open=self._state.may_open(live.model, spec.name, now)))
        live.stats.end(now, started=outcome.started, ok=True, latency_ms=latency_ms, ttft_ms=timing.ttft_ms,
                       tpot_ms=timing.tpot_ms, output_tokens=usage.completion_tokens,
                       ttft_measured=outcome.first_token_at is not None)
        live.health.record_live_success()
        self._telemetry.record(live.model, spec.name, ok=True, latency_ms=latency_ms, ttft_ms=timing.ttft_ms,
                               tpot_ms=timing.tpot_ms, input_tokens=usage.prompt_tokens,
                               output_tokens=usage.completion_tokens)
        if self._rate_limits is not None and spec.tpm_limit:
            self._rate_limits.settle_deployment(live.model, spec.name, outcome.estimated_prompt_tokens,
                                                usage.total_tokens, now)
        cost_usd = usage.cost(spec.cost_per_1m_input, spec.cost_per_1m_output)
        if on_usage is not None:
            on_usage(Settled(live.model, usage, cost_usd))
        self._count(live, outcome, usage, cost_usd, timing, policy)

    def _count(self, live: LiveDeployment, outcome: Outcome, usage: Usage, cost_usd: float, timing: AnswerTiming,
               policy: str) -> None:
        metrics = self._metrics
        labels = _labels(self._region, live)
        metrics.requests.inc((*labels, policy, str(outcome.status)))
        metrics.latency.observe(labels, outcome.total_ms / 1000)
        if outcome.first_token_at is not None:
            metrics.ttft.observe(labels, timing.ttft_ms / 1000)
        if timing.tpot_ms is not None:
            metrics.tpot.observe(labels, timing.tpot_ms / 1000)
        source = "estimated" if usage.estimated else "reported"
        metrics.tokens.inc((*labels, "input", source), usage.prompt_tokens)
        metrics.tokens.inc((*labels, "output", source), usage.completion_tokens)
        metrics.cost.inc(labels, cost_usd)

