"""The ejection state machine, driven directly: every transition, and never losing a whole model."""

from __future__ import annotations

import pytest
from compute_fixtures import LLAMA, stats

from control_plane.config import ComputeSettings
from control_plane.effective_policy import EjectionThresholds
from control_plane.ejection import (
    KEPT_REASON,
    PROBING_REASON,
    DeploymentHealth,
    Health,
    keep_one,
    next_health,
)

SETTINGS = ComputeSettings()
THRESHOLDS = EjectionThresholds(max_error_rate=0.5, max_p95_ms=5000)
ACTIVE = DeploymentHealth(Health.ACTIVE, 0.0)
EJECTED = DeploymentHealth(Health.EJECTED, 100.0, "ejected: error rate", 0.9, 100.0)
PROBING = DeploymentHealth(Health.PROBING, 100.0, PROBING_REASON)
GOOD = stats(LLAMA, "d", 100, requests=50)
ERRORING = stats(LLAMA, "d", 100, requests=50, errors=30)
SLOW = stats(LLAMA, "d", 8000, requests=50)
SCARCE = stats(LLAMA, "d", 100, requests=5, errors=5)


@pytest.mark.parametrize(
    ("current", "figures", "now", "state"),
    [
        (ACTIVE, GOOD, 110.0, Health.ACTIVE),
        (ACTIVE, ERRORING, 110.0, Health.EJECTED),
        (ACTIVE, SLOW, 110.0, Health.EJECTED),
        (ACTIVE, SCARCE, 110.0, Health.ACTIVE),
        (ACTIVE, None, 110.0, Health.ACTIVE),
        (EJECTED, GOOD, 100.0 + SETTINGS.probe_after_s - 0.1, Health.EJECTED),
        (EJECTED, ERRORING, 100.0 + SETTINGS.probe_after_s, Health.PROBING),
        (PROBING, None, 140.0, Health.PROBING),
        (PROBING, SCARCE, 140.0, Health.PROBING),
        (PROBING, ERRORING, 140.0, Health.EJECTED),
        (PROBING, GOOD, 140.0, Health.ACTIVE),
    ],
)
def test_transitions(current: DeploymentHealth, figures: object, now: float, state: Health) -> None:
    after = next_health(current, figures, THRESHOLDS, SETTINGS, now)  # type: ignore[arg-type]
    assert after.state is state
    if after.state is not current.state:
        assert after.since == now


def test_ejection_reason_names_the_threshold() -> None:
    assert next_health(ACTIVE, SLOW, THRESHOLDS, SETTINGS, 1.0).reason.startswith("ejected: p95")
    assert "0.600 > 0.500 over 50 requests" in next_health(ACTIVE, ERRORING, THRESHOLDS, SETTINGS, 1.0).reason


def test_p95_threshold_zero_is_off() -> None:
    after = next_health(ACTIVE, SLOW, EjectionThresholds(0.5, 0.0), SETTINGS, 1.0)
    assert after.state is Health.ACTIVE


def test_keep_one_prefers_the_one_in_service_before_then_the_least_bad() -> None:
    all_bad = {
        "a": DeploymentHealth(Health.EJECTED, 5.0, "x", 0.9, 100.0),
        "b": DeploymentHealth(Health.EJECTED, 5.0, "x", 0.6, 100.0),
        "c": DeploymentHealth(Health.EJECTED, 5.0, "x", 0.6, 900.0),
    }
    fresh = keep_one(all_bad, {})
    assert [n for n, h in fresh.items() if h.in_service] == ["b"] and fresh["b"].reason == KEPT_REASON
    sticky = keep_one(all_bad, {"a": ACTIVE, "b": EJECTED, "c": EJECTED})
    assert [n for n, h in sticky.items() if h.in_service] == ["a"]


def test_keep_one_leaves_a_model_with_a_healthy_deployment_alone() -> None:
    healths = {"a": EJECTED, "b": PROBING}
    assert keep_one(healths, {}) == healths
