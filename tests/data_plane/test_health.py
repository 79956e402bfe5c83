"""DeploymentHealth driven directly: failures of probes or live traffic take a deployment out, only
consecutive successful probes bring it back, illegal events raise and change nothing."""

from __future__ import annotations

import pytest

from data_plane.deployments.health import (
    TRANSITIONS,
    DeploymentHealth,
    HealthChange,
    HealthEvent,
    HealthProtocolError,
    HealthState,
)

HEALTHY, UNHEALTHY = HealthState.HEALTHY, HealthState.UNHEALTHY


def _feed(health: DeploymentHealth, script: str) -> list[bool]:
    """P/p: probe ok/failed, L/l: live success/failure; returns `healthy` after each event."""
    seen = []
    for event in script:
        if event in "Pp":
            health.record_probe(None if event == "P" else "GET /models answered 503 (server failure)")
        elif event == "L":
            health.record_live_success()
        else:
            health.record_live_failure("unreachable")
        seen.append(health.healthy)
    return seen


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("", ""),
        ("PPP", "YYY"),
        ("p", "Y"),
        ("pp", "YN"),
        ("pPp", "YYY"),  # not consecutive
        ("ll", "YN"),  # live connection failures count too
        ("pl", "YN"),  # and mix with failed probes
        ("lLl", "YYY"),  # a live success breaks the run
        ("ppP", "YNN"),
        ("ppPPP", "YNNNY"),  # healthy_after=3 successful probes
        ("ppPPpPPP", "YNNNNNNY"),  # a failed probe restarts the count
        ("ppPPlPPP", "YNNNNNNY"),  # so does a live failure
        ("ppLLLLL", "YNNNNNN"),  # live successes never bring it back
        ("ppPPLP", "YNNNNY"),  # ...nor break the probes' run
    ],
)
def test_health_scripts(script: str, expected: str) -> None:
    health = DeploymentHealth(healthy_after=3, unhealthy_after=2)
    assert "".join("Y" if h else "N" for h in _feed(health, script)) == expected


def test_changes_are_reported_once_with_a_reason_and_the_latest_failure_says_why_it_is_out() -> None:
    health = DeploymentHealth(healthy_after=2, unhealthy_after=2)
    assert health.record_probe("GET /models answered 401 (misconfigured)") is None
    assert health.reason is None  # still healthy
    left = HealthChange(HEALTHY, UNHEALTHY, "2 consecutive failures, last live: answered 401 (misconfigured)")
    assert health.record_live_failure("answered 401 (misconfigured)") == left
    assert health.reason == "live: answered 401 (misconfigured)"
    assert health.record_probe("GET /models does not list served_model 'x' (it lists: m)") is None
    assert health.reason == "probe: GET /models does not list served_model 'x' (it lists: m)"
    assert health.record_probe(None) is None
    assert health.record_probe(None) == HealthChange(UNHEALTHY, HEALTHY, "2 consecutive probes ok")
    assert health.state is HEALTHY and health.reason is None


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        DeploymentHealth(healthy_after=0, unhealthy_after=2)


ILLEGAL = [(state, event) for state in HealthState for event in HealthEvent
           if event not in TRANSITIONS[state]]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_illegal_events_raise_and_change_nothing(state: HealthState, event: HealthEvent) -> None:
    health = DeploymentHealth(healthy_after=1, unhealthy_after=1)
    if state is UNHEALTHY:
        health.record_probe("GET /models answered 404 (misconfigured)")
    assert health.state is state
    with pytest.raises(HealthProtocolError, match="is illegal in state"):
        health.fire(event, "illegal")
    assert health.state is state
