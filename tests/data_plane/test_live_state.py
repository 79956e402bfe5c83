"""The router's live state over a real table: which deployments are due a trial, how many breakers of a model
may be open at once, and the answer length a request without max_tokens is expected to have."""

from __future__ import annotations

import pytest

from data_plane.app import key_env_allowlist
from data_plane.config import HealthCheckConfig, PrefixAffinityConfig, RouterConfig, StatisticsConfig, bootstrap_table
from data_plane.live_state import RouterState
from data_plane.policies import TrialReason
from data_plane.table.snapshot import snapshot_from_proto

STALE_S = 10.0


def _state(deployments: int = 4, *, max_ejection_percent: float = 50.0) -> RouterState:
    config = RouterConfig.model_validate({
        "region": "us-east",
        "models": {"m": {
            "typical_output_tokens": 300,
            "breaker": {"min_requests": 1, "consecutive_failures": 1, "open_duration_s": 5,
                        "max_ejection_percent": max_ejection_percent},
            "deployments": [
                {"name": f"d{i}", "url": f"http://10.0.0.{i + 1}:8000/v1", "served_model": "m",
                 "region": "us-east" if i % 2 == 0 else "eu-west"} for i in range(deployments)
            ],
        }},
    })
    table = snapshot_from_proto(bootstrap_table(config), expected_region="us-east",
                               key_envs=key_env_allowlist(config))
    return RouterState(region="us-east", health_settings=HealthCheckConfig(),
                       statistics=StatisticsConfig(stale_after_s=STALE_S), table=table)


def _open(state: RouterState, name: str, now: float) -> None:
    assert state.live[("m", name)].breaker.record(now, ok=False, may_open=True) is not None


def _trials(state: RouterState, now: float) -> dict[str, TrialReason | None]:
    return {c.deployment.name: c.trial for c in state.candidates(state.table.models["m"], now)}


def test_at_most_the_ejection_percentage_of_a_models_breakers_open_at_once() -> None:
    state = _state(4)  # 50 % of 4: two at once
    assert state.may_open("m", "d0", 1.0)
    _open(state, "d0", 1.0)
    assert state.may_open("m", "d1", 1.0)
    _open(state, "d1", 1.0)
    assert not state.may_open("m", "d2", 1.0)
    assert state.may_open("m", "d0", 1.0)  # itself does not count against it
    assert not state.may_open("m", "d2", 6.5)  # half-open is still out


@pytest.mark.parametrize(("deployments", "percent", "opened"), [(1, 50.0, 1), (2, 50.0, 1), (3, 100.0, 3)])
def test_at_least_one_may_open(deployments: int, percent: float, opened: int) -> None:
    state = _state(deployments, max_ejection_percent=percent)
    names = [f"d{i}" for i in range(deployments)]
    allowed = 0
    for name in names:
        if state.may_open("m", name, 1.0):
            _open(state, name, 1.0)
            allowed += 1
    assert allowed == opened


def test_a_half_open_deployment_is_due_its_trial_until_one_is_outstanding() -> None:
    state = _state(2)
    _open(state, "d0", 0.0)
    assert _trials(state, 1.0)["d0"] is None  # open: not a candidate at all yet
    assert _trials(state, 5.0)["d0"] is TrialReason.HALF_OPEN
    assert state.live[("m", "d0")].breaker.admit(5.0)[0]
    assert _trials(state, 5.1)["d0"] is None


def test_fresh_probe_figures_spare_clients_the_trial() -> None:
    """With a recent probe measurement the ranking decides on it: no client's request is put first to test."""
    state = _state(2)
    _open(state, "d0", 0.0)
    state.live[("m", "d0")].stats.record_probe(4.5, 40.0, 4.0)
    assert _trials(state, 5.0)["d0"] is None


def test_a_local_deployment_that_lost_its_traffic_is_due_a_trial() -> None:
    state = _state(2)
    for name in ("d0", "d1"):  # d0 local, d1 remote
        stats = state.live[("m", name)].stats
        stats.begin(0.0)
        stats.end(0.5, started=0.0, ok=True, latency_ms=500.0, ttft_ms=50.0, tpot_ms=5.0, output_tokens=90)
    assert _trials(state, 5.0) == {"d0": None, "d1": None}
    # Its own region explores it; the remote one's figures come through the control plane.
    assert _trials(state, 11.0) == {"d0": TrialReason.STALE, "d1": None}
    state.live[("m", "d0")].stats.begin(11.0)  # the trial went out
    assert _trials(state, 11.5)["d0"] is None


def test_a_deployment_never_used_is_not_stale() -> None:
    assert _trials(_state(2), 100.0) == {"d0": None, "d1": None}


def test_typical_output_tokens_from_the_window_else_the_table() -> None:
    state = _state(2)
    model = state.table.models["m"]
    assert state.typical_output_tokens(model, 1.0) == 300
    stats = state.live[("m", "d0")].stats
    for tokens in (100, 200, 300):
        stats.end(1.0, started=0.5, ok=True, latency_ms=100.0, output_tokens=tokens)
    assert state.typical_output_tokens(model, 1.05) == 300  # recomputed at most every 100 ms
    assert state.typical_output_tokens(model, 1.2) == 200
    stats.end(1.2, started=0.5, ok=False, latency_ms=100.0)  # a failure has no answer length
    stats.end(1.2, started=0.5, ok=True, latency_ms=100.0, output_tokens=1000)
    assert state.typical_output_tokens(model, 1.4) == 400
    assert state.typical_output_tokens(model, 30.0) == 300  # out of the window: the table's again


def test_the_deployment_that_was_sent_a_prefix_is_credited_with_its_cached_tokens() -> None:
    state = _state(2)
    model = state.table.models["m"]
    blocks = tuple(range(1, 11))  # ten blocks of 64 tokens
    state.live[("m", "d0")].prefixes.remember(blocks[:6])  # type: ignore[union-attr]
    cached = {c.deployment.name: c.cached_prompt_tokens for c in state.candidates(model, 1.0, 2_000, blocks)}
    assert cached == {"d0": 6 * 64, "d1": 0}
    # Never the whole prompt: its last token is always computed.
    short = {c.deployment.name: c.cached_prompt_tokens for c in state.candidates(model, 1.0, 100, blocks)}
    assert short == {"d0": 99, "d1": 0}


def test_without_prefix_affinity_no_deployment_keeps_an_index() -> None:
    state = _state(2)
    off = RouterState(region="us-east", health_settings=HealthCheckConfig(), statistics=StatisticsConfig(),
                      prefix_affinity=PrefixAffinityConfig(enabled=False), table=state.table)
    assert all(live.prefixes is None for live in off.live.values())
    assert {c.cached_prompt_tokens for c in off.candidates(state.table.models["m"], 1.0, 2_000, (1, 2))} == {0}
