"""The engines' own signals in every policy: saturation thresholds take a deployment out unless all are over,
the load term of the scored policy, and ties in latency-first going to the less loaded engine."""

from __future__ import annotations

import random

import pytest
from routing_fixtures import candidate, request

from data_plane.policies import PolicyState, decide
from data_plane.policies.engine_load import engine_load
from data_plane.policies.exclusion import ExclusionKind
from meridian_common import policy_names as names
from meridian_common.engine_figures import EngineFigures


def engine(waiting: float = 0.0, running: float = 4.0, kv: float | None = None) -> EngineFigures:
    return EngineFigures(requests_running=running, requests_waiting=waiting, kv_cache_usage=kv)


@pytest.mark.parametrize("policy", names.POLICIES)
def test_an_engine_over_a_threshold_is_out_under_every_policy(policy: str) -> None:
    pool = [candidate("queued", ttft=50, tpot=5, engine=engine(waiting=20)),
            candidate("full", ttft=50, tpot=5, engine=engine(kv=0.99)),
            candidate("free", ttft=400, tpot=20, engine=engine(waiting=1, kv=0.5))]
    decision = decide(pool, request(policy, max_requests_waiting=8, max_kv_cache_usage=0.95), PolicyState(),
                      random.Random(1))
    assert [d.name for d in decision.ordered] == ["free"]
    excluded = {f.name: f.exclusion for f in decision.figures if f.exclusion is not None}
    assert {name: e.kind for name, e in excluded.items()} == {"queued": ExclusionKind.ENGINE_SATURATED,
                                                               "full": ExclusionKind.ENGINE_SATURATED}
    assert str(excluded["queued"]) == "engine queue 20 waiting > 8"
    assert str(excluded["full"]) == "engine KV cache 99% used > 95%"


def test_when_every_engine_is_over_the_thresholds_they_are_ignored() -> None:
    pool = [candidate("a", ttft=300, tpot=5, engine=engine(waiting=20)),
            candidate("b", ttft=100, tpot=5, engine=engine(kv=0.99))]
    decision = decide(pool, request(names.LATENCY_FIRST, max_requests_waiting=8, max_kv_cache_usage=0.95),
                      PolicyState(), random.Random(1))
    assert [d.name for d in decision.ordered] == ["b", "a"]
    assert decision.reason.startswith("every engine over the saturation thresholds (2), thresholds ignored; ")
    assert not decision.panic


def test_a_broken_deployment_is_not_brought_back_by_ignoring_the_thresholds() -> None:
    pool = [candidate("broken", ttft=10, tpot=1, healthy=False),
            candidate("queued", ttft=300, tpot=5, engine=engine(waiting=20))]
    decision = decide(pool, request(names.LATENCY_FIRST, max_requests_waiting=8), PolicyState(), random.Random(1))
    assert [d.name for d in decision.ordered] == ["queued"]


def test_thresholds_of_zero_are_off() -> None:
    pool = [candidate("a", ttft=50, tpot=5, engine=engine(waiting=500, kv=1.0))]
    decision = decide(pool, request(names.LATENCY_FIRST), PolicyState(), random.Random(1))
    assert decision.figures[0].eligible


def test_latency_first_ties_go_to_the_less_loaded_engine() -> None:
    pool = [candidate("busy", ttft=100, tpot=5, engine=engine(waiting=6)),
            candidate("idle", ttft=100, tpot=5, engine=engine(waiting=0, kv=0.1))]
    decision = decide(pool, request(names.LATENCY_FIRST, max_requests_waiting=8), PolicyState(), random.Random(1))
    assert [d.name for d in decision.ordered] == ["idle", "busy"]


def test_the_scored_load_term_prefers_the_emptier_engine() -> None:
    pool = [candidate("busy", ttft=100, tpot=5, engine=engine(waiting=6, kv=0.9)),
            candidate("idle", ttft=100, tpot=5, engine=engine(waiting=0, kv=0.1))]
    decision = decide(pool, request(names.SCORED, score_weights=(0.0, 0.0, 0.0, 1.0), max_requests_waiting=8),
                      PolicyState(), random.Random(1))
    scores = {f.name: f.score for f in decision.figures}
    assert decision.ordered[0].name == "idle"
    assert scores == {"busy": pytest.approx(0.1), "idle": pytest.approx(0.9)}


@pytest.mark.parametrize(("figures", "threshold", "in_flight", "limit", "load"), [
    (engine(waiting=4), 8, 0, 0, 0.5),  # the queue as a share of its threshold
    (engine(waiting=4, kv=0.8), 8, 0, 0, 0.8),  # the larger of queue and KV cache
    (engine(waiting=30), 8, 0, 0, 1.0),  # capped at 1
    (engine(waiting=1, running=3), 0, 0, 0, 0.25),  # no threshold: the share of the work that waits
    (None, 8, 3, 4, 0.75),  # no engine figures: in flight over the concurrency limit
    (None, 8, 3, 0, 0.0),  # neither: nothing known
])
def test_engine_load(figures: EngineFigures | None, threshold: int, in_flight: int, limit: int, load: float) -> None:
    assert engine_load(figures, threshold, in_flight, limit) == pytest.approx(load)
