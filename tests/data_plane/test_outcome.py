"""One attempt's Outcome applied in one place: statistics with TTFT and TPOT (derived for whole answers), the
breaker with its ejection cap, health, telemetry and metrics, on a real router state."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from data_plane.app import key_env_allowlist
from data_plane.config import HealthCheckConfig, RouterConfig, StatisticsConfig, bootstrap_table
from data_plane.deployments.breaker import BreakerState
from data_plane.live_state import LiveDeployment, RouterState
from data_plane.metrics import RouterMetrics
from data_plane.serving.answer_timing import AnswerTiming
from data_plane.serving.backend_answer import classify
from data_plane.serving.outcome import Outcome, OutcomeKind, OutcomeRecorder, Settled
from data_plane.serving.usage import Usage
from data_plane.table.snapshot import snapshot_from_proto
from data_plane.telemetry.accumulator import TelemetryAccumulators


def _recorder() -> tuple[OutcomeRecorder, RouterState, RouterMetrics, TelemetryAccumulators]:
    config = RouterConfig.model_validate({
        "region": "us-east",
        "models": {"m": {
            "breaker": {"min_requests": 3, "consecutive_failures": 2, "open_duration_s": 5,
                        "ttft_p95_threshold_ms": 500, "tpot_p95_threshold_ms": 25},
            "deployments": [
                {"name": name, "url": f"http://{name}.test:8000/v1", "served_model": "m", "region": "us-east"}
                for name in ("a", "b")
            ],
        }},
    })
    state = RouterState(region="us-east", health_settings=HealthCheckConfig(), statistics=StatisticsConfig(),
                        table=snapshot_from_proto(bootstrap_table(config), expected_region="us-east",
                                                  key_envs=key_env_allowlist(config)))
    metrics, telemetry = RouterMetrics(), TelemetryAccumulators(started_unix_ms=0)
    return OutcomeRecorder(state, metrics, telemetry, "us-east"), state, metrics, telemetry


def _live(state: RouterState, name: str = "a") -> LiveDeployment:
    return state.live[("m", name)]


def _answer(recorder: OutcomeRecorder, live: LiveDeployment, started: float, total_s: float, tokens: int,
            first_token_s: float | None = None) -> None:
    live.stats.begin(started)
    recorder.apply(live, Outcome(OutcomeKind.ANSWERED, started, started + total_s, classify(200),
                                 Usage(100, tokens, False),
                                 None if first_token_s is None else started + first_token_s, 100), policy="p")


def _metric(metrics: RouterMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_stream_gives_measured_ttft_and_tpot_to_statistics_telemetry_and_metrics() -> None:
    recorder, state, metrics, telemetry = _recorder()
    live = _live(state)
    _answer(recorder, live, 1.0, total_s=1.26, tokens=201, first_token_s=0.06)
    view = live.stats.view(2.4)  # the window's counts are refreshed at most every 0.1 s
    assert view.ttft_ms == pytest.approx(60.0) and view.tpot_ms == pytest.approx(6.0)
    assert (view.answers, view.output_tokens, view.in_flight) == (1, 201, 0)
    (sample,) = telemetry.drain(router_id="r", region="us-east", table_version=0, now_unix_ms=1, in_flight={},
                                breaker_states={}, deployment_regions={})
    assert (sample.ttft.count, sample.tpot.count, sample.output_tokens) == (1, 1, 201)
    labels = {"region": "us-east", "model": "m", "deployment": "a", "architecture": "dense"}
    assert _metric(metrics, "meridian_tpot_seconds_count", **labels) == 1
    assert _metric(metrics, "meridian_ttft_seconds_count", **labels) == 1


def test_an_answer_is_settled_at_the_serving_deployments_prices() -> None:
    recorder, state, metrics, _ = _recorder()
    live = _live(state, "b")
    live.spec = replace(live.spec, cost_per_1m_input=0.5, cost_per_1m_output=1.5)
    settled: list[Settled] = []
    live.stats.begin(1.0)
    recorder.apply(live, Outcome(OutcomeKind.ANSWERED, 1.0, 2.0, classify(200), Usage(1200, 400, False),
                                 estimated_prompt_tokens=1000), policy="p", on_usage=settled.append)
    cost = (1200 * 0.5 + 400 * 1.5) / 1e6
    assert settled == [Settled("m", Usage(1200, 400, False), pytest.approx(cost))]
    labels = {"region": "us-east", "model": "m", "deployment": "b", "architecture": "dense"}
    assert _metric(metrics, "meridian_cost_dollars_total", **labels) == pytest.approx(cost)


def test_an_answer_the_request_was_at_fault_for_settles_nothing() -> None:
    recorder, state, _, _ = _recorder()
    live = _live(state)
    settled: list[Settled] = []
    live.stats.begin(1.0)
    recorder.apply(live, Outcome(OutcomeKind.ANSWERED, 1.0, 1.1, classify(400), Usage(10, 0, True)), policy="p",
                   on_usage=settled.append)
    assert settled == []


def test_a_whole_answer_is_split_on_the_deployments_ttft_estimate() -> None:
    recorder, state, _, _ = _recorder()
    live = _live(state)
    live.stats.record_probe(0.5, 80.0, None)
    _answer(recorder, live, 1.0, total_s=0.08 + 0.005 * 399, tokens=400)
    view = live.stats.view(3.1)
    assert view.tpot_ms == pytest.approx(5.0)


def test_a_long_healthy_answer_never_counts_against_the_breaker() -> None:
    recorder, state, _, _ = _recorder()
    live = _live(state)
    for i in range(10):  # 3000 tokens at 6 ms: 18 s each
        _answer(recorder, live, float(i), total_s=18.0, tokens=3000, first_token_s=0.07)
    assert live.breaker.state is BreakerState.CLOSED


def test_slow_tokens_open_the_breaker_and_a_good_streamed_trial_closes_it() -> None:
    recorder, state, _, _ = _recorder()
    live = _live(state)
    for i in range(2):
        _answer(recorder, live, float(i), total_s=0.05 + 0.1 * 99, tokens=100, first_token_s=0.05)  # 100 ms a token
    assert live.breaker.state is BreakerState.OPEN  # opened at 10.95 s, when the second answer ended
    assert live.breaker.admit(16.0)[0]
    _answer(recorder, live, 16.0, total_s=0.05 + 0.005 * 99, tokens=100, first_token_s=0.05)
    assert live.breaker.state is BreakerState.CLOSED
    tpot = live.stats.view(16.6).tpot_ms  # 5 s after the slow answers, the good one weighs 1 - exp(-5 / 2)
    assert tpot is not None and tpot < 12.0


def test_a_whole_answer_cannot_pass_a_trial_that_a_ttft_threshold_judges() -> None:
    recorder, state, _, _ = _recorder()
    live = _live(state)
    for i in range(2):
        _answer(recorder, live, float(i), total_s=2.0, tokens=100, first_token_s=1.5)  # 1.5 s first tokens
    assert live.breaker.state is BreakerState.OPEN and live.breaker.admit(10.0)[0]
    _answer(recorder, live, 10.0, total_s=0.4, tokens=100)  # its TTFT is unseen: no verdict, the slot is freed
    assert live.breaker.state is BreakerState.HALF_OPEN and not live.breaker.trial_outstanding(10.5)


@pytest.mark.parametrize(("ttft_ms", "state"), [(40.0, BreakerState.CLOSED), (1200.0, BreakerState.OPEN)])
def test_a_health_probe_is_the_trial_of_a_half_open_breaker(ttft_ms: float, state: BreakerState) -> None:
    recorder, state_, _, _ = _recorder()
    live = _live(state_)
    for i in range(2):
        _answer(recorder, live, float(i), total_s=2.0, tokens=100, first_token_s=1.5)
    recorder.probe_verdict(live, AnswerTiming(ttft_ms, 4.0), 3.0)  # still open: not its business
    assert live.breaker.state is BreakerState.OPEN
    recorder.probe_verdict(live, AnswerTiming(ttft_ms, 4.0), 10.0)
    assert live.breaker.state is state


def test_the_ejection_cap_holds_the_second_breaker_closed() -> None:
    recorder, state, metrics, _ = _recorder()
    for name in ("a", "b"):
        live = _live(state, name)
        for i in range(2):
            live.stats.begin(float(i))
            recorder.apply(live, Outcome(OutcomeKind.FAILED, float(i), i + 0.01), policy="p")
    assert _live(state, "a").breaker.state is BreakerState.OPEN
    assert _live(state, "b").breaker.state is BreakerState.CLOSED  # 50 % of two: one at a time
    labels = {"region": "us-east", "model": "m", "deployment": "b", "architecture": "dense"}
    assert _metric(metrics, "meridian_breaker_trips_held_total", **labels) == 1


@pytest.mark.parametrize(("kind", "health_failures"), [(OutcomeKind.FAILED, 0), (OutcomeKind.UNREACHABLE, 1),
                                                       (OutcomeKind.STREAM_BROKEN, 1)])
def test_only_an_unreachable_backend_counts_against_its_health(kind: OutcomeKind, health_failures: int) -> None:
    recorder, state, _, _ = _recorder()
    live = _live(state)
    live.stats.begin(1.0)
    recorder.apply(live, Outcome(kind, 1.0, 1.2), policy="p")
    assert live.health._failures == health_failures  # noqa: SLF001
    assert live.stats.view(1.3).errors == 1


def test_an_abandoned_request_only_frees_its_slot() -> None:
    recorder, state, _, telemetry = _recorder()
    live = _live(state)
    live.stats.begin(1.0, awaiting_first_token=True)
    recorder.apply(live, Outcome(OutcomeKind.ABANDONED, 1.0, 1.5), policy="p")
    view = live.stats.view(1.6)
    assert (view.in_flight, view.requests, view.waiting_first_token_ms) == (0, 0, 0.0)
    assert telemetry.drain(router_id="r", region="us-east", table_version=0, now_unix_ms=1, in_flight={},
                           breaker_states={}, deployment_regions={}) == []


def _answered_with(recorder: OutcomeRecorder, live: LiveDeployment, started: float, status: int,
                   retry_after: str | None = None) -> None:
    live.stats.begin(started)
    recorder.apply(live, Outcome(OutcomeKind.ANSWERED, started, started + 0.01, classify(status, retry_after)),
                   policy="p")


@pytest.mark.parametrize(
    ("status", "breaker_failures", "errors", "health_failures", "counted_as_served", "saturated_s"),
    [
        (400, 0, 0, 0, 1, 0.0),  # the client's fault: passed through, nothing against the backend
        (413, 0, 0, 0, 1, 0.0),
        (422, 0, 0, 0, 1, 0.0),
        (401, 1, 1, 1, 0, 0.0),  # misconfigured: a failure for the breaker and for health
        (403, 1, 1, 1, 0, 0.0),
        (404, 1, 1, 1, 0, 0.0),
        (429, 0, 0, 0, 0, 1.0),  # saturated: no verdict, no candidate until its Retry-After (1 s by default)
        (500, 1, 1, 0, 0, 0.0),  # a failure of a backend that is up: the breaker's, not health's
        (503, 1, 1, 0, 0, 0.0),
        (408, 1, 1, 0, 0, 0.0),
    ],
)
def test_what_an_answers_status_counts_against_its_deployment(status: int, breaker_failures: int, errors: int,
                                                              health_failures: int, counted_as_served: int,
                                                              saturated_s: float) -> None:
    recorder, state, metrics, telemetry = _recorder()
    live = _live(state)
    _answered_with(recorder, live, 1.0, status)
    view = live.stats.view(1.1)
    assert view.in_flight == 0
    assert (view.requests, view.errors) == (errors, errors)
    assert live.breaker._failures_in_a_row == breaker_failures  # noqa: SLF001
    assert live.health._failures == health_failures  # noqa: SLF001
    labels = {"region": "us-east", "model": "m", "deployment": "a", "architecture": "dense", "policy": "p",
              "status": str(status)}
    assert _metric(metrics, "meridian_requests_total", **labels) == counted_as_served
    assert live.saturated_until == (1.01 + saturated_s if saturated_s else float("-inf"))
    samples = telemetry.drain(router_id="r", region="us-east", table_version=0, now_unix_ms=1, in_flight={},
                              breaker_states={}, deployment_regions={})
    assert sum(sample.errors for sample in samples) == errors


def test_misconfigured_answers_trip_the_breaker_take_health_out_and_say_why() -> None:
    recorder, state, _, _ = _recorder()  # consecutive_failures 2; health unhealthy_after 2 by default
    live = _live(state)
    for i in range(2):
        _answered_with(recorder, live, float(i), 404)
    assert live.breaker.state is BreakerState.OPEN
    assert not live.health.healthy
    assert live.health.reason == "live: answered 404 (misconfigured)"


def test_a_misconfigured_deployment_is_logged_once_per_status_change(caplog: pytest.LogCaptureFixture) -> None:
    recorder, state, _, _ = _recorder()
    live = _live(state, "b")
    with caplog.at_level(logging.INFO, logger="data_plane.serving.outcome"):
        for i, status in enumerate([404, 404, 404, 401, 401, 200, 200, 404]):
            _answered_with(recorder, live, i * 100.0, status)  # far apart: the breaker is closed again each time
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("deployment_")]
    assert [line.split(" hint=")[0] for line in lines] == [
        "deployment_misconfigured model=m deployment=b status=404",
        "deployment_misconfigured model=m deployment=b status=401",
        "deployment_answering model=m deployment=b after_status=401 status=200",
        "deployment_misconfigured model=m deployment=b status=404",
    ]
    assert lines[1].endswith("hint=\"the backend refused the router's credentials: check the deployment's "
                             "api_key_env\"")


def test_a_429_keeps_the_deployment_out_until_its_retry_after_and_logs_when_a_pause_starts(
        caplog: pytest.LogCaptureFixture) -> None:
    recorder, state, _, _ = _recorder()
    live, other = _live(state, "a"), _live(state, "b")
    model = state.table.models["m"]
    with caplog.at_level(logging.WARNING, logger="data_plane.serving.outcome"):
        _answered_with(recorder, live, 1.0, 429, "3")
        _answered_with(recorder, live, 1.5, 429, "1")  # a shorter wait never shortens the pause
        _answered_with(recorder, live, 2.0, 429, "5")  # a longer one extends it, without a second log line
    assert live.saturated_until == pytest.approx(7.01)
    a, b = state.candidates(model, 6.0)
    assert a.backend_saturated == "backend saturated: answered 429, no request for 1.0s"
    assert b.backend_saturated is None and other.saturated_until == float("-inf")
    assert state.candidates(model, 7.02)[0].backend_saturated is None
    assert live.breaker.state is BreakerState.CLOSED and live.health.healthy
    saturated = [r.getMessage() for r in caplog.records if "deployment_saturated" in r.getMessage()]
    assert saturated == ["deployment_saturated model=m deployment=a status=429 retry_after_s=3.0"]


@pytest.mark.parametrize("status", [400, 429])
def test_an_answer_that_is_no_verdict_frees_the_half_open_trial(status: int) -> None:
    recorder, state, _, _ = _recorder()
    live = _live(state)
    for i in range(2):
        _answered_with(recorder, live, float(i), 500)
    assert live.breaker.state is BreakerState.OPEN and live.breaker.admit(10.0)[0]
    _answered_with(recorder, live, 10.0, status)
    assert live.breaker.state is BreakerState.HALF_OPEN and not live.breaker.trial_outstanding(10.5)


def test_an_answered_outcome_needs_its_answer() -> None:
    with pytest.raises(ValueError, match="an outcome has an answer exactly when it is 'answered'"):
        Outcome(OutcomeKind.ANSWERED, 1.0, 2.0)
    with pytest.raises(ValueError, match="got kind 'failed' with answer"):
        Outcome(OutcomeKind.FAILED, 1.0, 2.0, classify(502))
