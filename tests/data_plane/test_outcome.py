"""One attempt's Outcome applied in one place: statistics with TTFT and TPOT (derived for whole answers), the
breaker with its ejection cap, health, telemetry and metrics, on a real router state."""

from __future__ import annotations

import pytest

from data_plane.app import key_env_allowlist
from data_plane.config import HealthCheckConfig, RouterConfig, StatisticsConfig, bootstrap_table
from data_plane.deployments.breaker import BreakerState
from data_plane.live_state import LiveDeployment, RouterState
from data_plane.metrics import RouterMetrics
from data_plane.serving.answer_timing import AnswerTiming
from data_plane.serving.outcome import Outcome, OutcomeKind, OutcomeRecorder
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
    recorder.apply(live, Outcome(OutcomeKind.ANSWERED, started, started + total_s, 200, Usage(100, tokens, False),
                                 None if first_token_s is None else started + first_token_s, 100), policy="p")


def _metric(metrics: RouterMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_stream_gives_measured_ttft_and_tpot_to_statistics_telemetry_and_metrics() -> None:
    recorder, state, metrics, telemetry = _recorder()
    live = _live(state)
    _answer(recorder, live, 1.0, total_s=1.26, tokens=201, first_token_s=0.06)
    view = live.stats.view(2.3)
    assert view.ttft_ms == pytest.approx(60.0) and view.tpot_ms == pytest.approx(6.0)
    assert (view.answers, view.output_tokens, view.in_flight) == (1, 201, 0)
    (sample,) = telemetry.drain(router_id="r", region="us-east", table_version=0, now_unix_ms=1, in_flight={},
                                breaker_states={}, deployment_regions={})
    assert (sample.ttft.count, sample.tpot.count, sample.output_tokens) == (1, 1, 201)
    labels = {"region": "us-east", "model": "m", "deployment": "a", "architecture": "dense"}
    assert _metric(metrics, "meridian_tpot_seconds_count", **labels) == 1
    assert _metric(metrics, "meridian_ttft_seconds_count", **labels) == 1


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
