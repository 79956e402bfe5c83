"""The ejection state machine, driven directly: every transition, and never losing a whole model."""

from __future__ import annotations

import pytest
from compute_fixtures import LLAMA, stats

from control_plane.config import ComputeSettings
from control_plane.policy.effective import EjectionThresholds
from control_plane.tables.ejection import (
    KEPT_REASON,
    PROBING_REASON,
    DeploymentHealth,
    Health,
    keep_one,
    next_health,
)
from control_plane.telemetry.merge import MergedStats
from meridian_common.histogram import Histogram

SETTINGS = ComputeSettings()
THRESHOLDS = EjectionThresholds(max_error_rate=0.5, max_ttft_p95_ms=5000, max_tpot_p95_ms=50)
OFF = EjectionThresholds(max_error_rate=0.5, max_ttft_p95_ms=0.0, max_tpot_p95_ms=0.0)
ACTIVE = DeploymentHealth(Health.ACTIVE, 0.0)
EJECTED = DeploymentHealth(Health.EJECTED, 100.0, "ejected: error rate", 0.9, 100.0, 20.0)
PROBING = DeploymentHealth(Health.PROBING, 100.0, PROBING_REASON)
GOOD = stats(LLAMA, "d", 100, requests=50)
ERRORING = stats(LLAMA, "d", 100, requests=50, errors=30)
SLOW_START = stats(LLAMA, "d", 8000, requests=50)
SLOW_TOKENS = stats(LLAMA, "d", 100, requests=50, tpot_ms=80)
# 100 ms + 20 ms x 4000 tokens: 80 s per answer, from a perfectly healthy backend.
LONG_ANSWERS = stats(LLAMA, "d", 100, requests=50, answer_tokens=4000)
SCARCE = stats(LLAMA, "d", 100, requests=5, errors=5)


@pytest.mark.parametrize(
    ("current", "figures", "now", "state"),
    [
        (ACTIVE, GOOD, 110.0, Health.ACTIVE),
        (ACTIVE, ERRORING, 110.0, Health.EJECTED),
        (ACTIVE, SLOW_START, 110.0, Health.EJECTED),
        (ACTIVE, SLOW_TOKENS, 110.0, Health.EJECTED),
        (ACTIVE, LONG_ANSWERS, 110.0, Health.ACTIVE),
        (ACTIVE, SCARCE, 110.0, Health.ACTIVE),
        (ACTIVE, None, 110.0, Health.ACTIVE),
        (EJECTED, GOOD, 100.0 + SETTINGS.probe_after_s - 0.1, Health.EJECTED),
        (EJECTED, ERRORING, 100.0 + SETTINGS.probe_after_s, Health.PROBING),
        (PROBING, None, 140.0, Health.PROBING),
        (PROBING, SCARCE, 140.0, Health.PROBING),
        (PROBING, ERRORING, 140.0, Health.EJECTED),
        (PROBING, SLOW_TOKENS, 140.0, Health.EJECTED),
        (PROBING, GOOD, 140.0, Health.ACTIVE),
    ],
)
def test_transitions(current: DeploymentHealth, figures: object, now: float, state: Health) -> None:
    after = next_health(current, figures, THRESHOLDS, SETTINGS, now)  # type: ignore[arg-type]
    assert after.state is state
    if after.state is not current.state:
        assert after.since == now


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        (ERRORING, "ejected: error rate 0.600 > 0.500 over 50 requests"),
        (SLOW_START, "ejected: TTFT p95 "),
        (SLOW_TOKENS, "ejected: TPOT p95 "),
    ],
)
def test_ejection_reason_names_the_figure(figures: MergedStats, reason: str) -> None:
    after = next_health(ACTIVE, figures, THRESHOLDS, SETTINGS, 1.0)
    assert after.reason.startswith(reason), after.reason
    assert "over 50 " in after.reason


def test_an_ejection_keeps_the_figures_it_was_judged_on() -> None:
    after = next_health(ACTIVE, SLOW_TOKENS, THRESHOLDS, SETTINGS, 1.0)
    assert (after.error_rate, after.ttft_p95_ms, after.tpot_p95_ms) == (
        0.0, SLOW_TOKENS.ttft_p95_ms, SLOW_TOKENS.tpot_p95_ms)


@pytest.mark.parametrize("figures", [SLOW_START, SLOW_TOKENS])
def test_a_zero_threshold_is_off(figures: MergedStats) -> None:
    assert next_health(ACTIVE, figures, OFF, SETTINGS, 1.0).state is Health.ACTIVE


def test_a_figure_measured_on_too_few_answers_is_not_judged() -> None:
    # Mostly one-token answers: enough requests, but TPOT measured on three of them only.
    few = MergedStats(model=LLAMA, deployment="d", deployment_region="eu-west", requests=50, errors=0,
                      ttft=Histogram.of([100.0] * 50), tpot=Histogram.of([900.0] * 3))
    assert next_health(ACTIVE, few, THRESHOLDS, SETTINGS, 1.0).state is Health.ACTIVE


def test_keep_one_prefers_the_one_in_service_before_then_the_least_bad() -> None:
    all_bad = {
        "a": DeploymentHealth(Health.EJECTED, 5.0, "x", 0.9, 100.0, 20.0),
        "b": DeploymentHealth(Health.EJECTED, 5.0, "x", 0.6, 100.0, 20.0),
        "c": DeploymentHealth(Health.EJECTED, 5.0, "x", 0.6, 9000.0, 20.0),
    }
    fresh = keep_one(all_bad, {}, THRESHOLDS)
    assert [n for n, h in fresh.items() if h.in_service] == ["b"] and fresh["b"].reason == KEPT_REASON
    sticky = keep_one(all_bad, {"a": ACTIVE, "b": EJECTED, "c": EJECTED}, THRESHOLDS)
    assert [n for n, h in sticky.items() if h.in_service] == ["a"]


@pytest.mark.parametrize(
    ("ttft_over", "tpot_over", "kept"),
    [
        ((6000.0, 20.0), (100.0, 80.0), "ttft-over"),  # TTFT 1.2 x its threshold against TPOT 1.6 x
        ((9000.0, 20.0), (100.0, 60.0), "tpot-over"),  # TTFT 1.8 x against TPOT 1.2 x
    ],
)
def test_keep_one_ranks_latency_by_how_far_over_its_threshold(
    ttft_over: tuple[float, float], tpot_over: tuple[float, float], kept: str
) -> None:
    all_slow = {
        "ttft-over": DeploymentHealth(Health.EJECTED, 5.0, "x", 0.0, *ttft_over),
        "tpot-over": DeploymentHealth(Health.EJECTED, 5.0, "x", 0.0, *tpot_over),
    }
    result = keep_one(all_slow, {}, THRESHOLDS)
    assert [n for n, h in result.items() if h.in_service] == [kept]


def test_keep_one_leaves_a_model_with_a_healthy_deployment_alone() -> None:
    healths = {"a": EJECTED, "b": PROBING}
    assert keep_one(healths, {}, THRESHOLDS) == healths
