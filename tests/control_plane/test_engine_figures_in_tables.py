"""Engine figures on the control plane: merged per deployment (most recent wins, old ones left out), carried in
every region's table, folded into the weights (queue wait, KV pressure, tokens/s), and published promptly when
an engine crosses its model's saturation thresholds."""

from __future__ import annotations

from dataclasses import replace

import pytest
from compute_fixtures import LLAMA, catalog, llama_stats, route, run_ticks, sample, weights

from control_plane.config import ComputeSettings
from control_plane.tables.compute import changed_materially
from control_plane.tables.weights import (
    ScoreInput,
    engine_tpot_ms,
    kv_pressure_factor,
    target_scores,
)
from control_plane.telemetry.merge import merge_samples
from meridian_common.engine_figures import EngineFigures
from meridian_proto import engine_pb2, routing_pb2

SETTINGS = ComputeSettings()


def _engine(waiting: float = 0, running: float = 4, kv: float | None = None, tokens_per_s: float | None = None,
            at_ms: int = 10_000) -> EngineFigures:
    return EngineFigures(requests_running=running, requests_waiting=waiting, kv_cache_usage=kv,
                         generation_tokens_per_s=tokens_per_s, observed_at_unix_ms=at_ms)


def _with_engine(router: str, figures: EngineFigures | None, end_ms: int = 10_000, architecture: str = "dense"):
    result = sample(router, LLAMA, "vllm-a", [100.0], end_ms=end_ms)
    result.architecture = architecture
    if figures is not None:
        result.engine.CopyFrom(figures.to_proto())
    return result


# ---- merge ------------------------------------------------------------------------------------------------


def test_the_most_recently_observed_figures_win() -> None:
    merged = merge_samples([
        _with_engine("r1", _engine(waiting=1, at_ms=9_000)),
        _with_engine("r2", _engine(waiting=7, at_ms=9_800), end_ms=9_900),
        _with_engine("r3", None, end_ms=10_000),
    ])[(LLAMA, "vllm-a")]
    assert merged.engine == _engine(waiting=7, at_ms=9_800)
    assert merged.architecture == "dense"
    assert merged.requests == 3  # the counts still add up over every router


def test_figures_older_than_the_bound_are_left_out() -> None:
    merged = merge_samples([_with_engine("r1", _engine(at_ms=4_000))], engine_since_unix_ms=5_000)
    assert merged[(LLAMA, "vllm-a")].engine is None


def test_impossible_figures_are_dropped_not_the_sample() -> None:
    bad = _with_engine("r1", None)
    bad.engine.CopyFrom(engine_pb2.EngineFigures(requests_running=1, kv_cache_usage=3.0, observed_at_unix_ms=9_000))
    merged = merge_samples([bad])[(LLAMA, "vllm-a")]
    assert merged.engine is None and merged.requests == 1


# ---- weights ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kv", "factor"), [(None, 1.0), (0.5, 1.0), (0.8, 1.0), (0.9, 0.6), (1.0, 0.2)])
def test_kv_pressure(kv: float | None, factor: float) -> None:
    assert kv_pressure_factor(_engine(kv=kv)) == pytest.approx(factor)


@pytest.mark.parametrize(("engine", "tpot_ms"), [
    (None, None), (_engine(tokens_per_s=None), None), (_engine(running=0, tokens_per_s=100.0), None),
    (_engine(running=4, tokens_per_s=200.0), 20.0),
])
def test_tpot_from_the_engines_throughput(engine: EngineFigures | None, tpot_ms: float | None) -> None:
    assert engine_tpot_ms(engine) == (pytest.approx(tpot_ms) if tpot_ms is not None else None)


BASE = ScoreInput(prior=1.0, ttft_ms=200.0, tpot_ms=20.0, error_rate=0.0, added_latency_ms=0.0)


@pytest.mark.parametrize(("loaded", "why"), [
    (replace(BASE, engine=_engine(waiting=6, running=4)), "a queue"),
    (replace(BASE, engine=_engine(waiting=0, kv=0.97)), "a nearly full KV cache"),
])
def test_a_loaded_engine_scores_lower_with_the_same_ttft(loaded: ScoreInput, why: str) -> None:
    scores = target_scores({"idle": replace(BASE, engine=_engine()), "loaded": loaded}, 100, SETTINGS)
    assert scores["loaded"] < scores["idle"], why


def test_an_unmeasured_tpot_comes_from_tokens_per_second() -> None:
    slow = replace(BASE, tpot_ms=None, engine=_engine(running=4, tokens_per_s=40.0))  # 100 ms per token
    fast = replace(BASE, tpot_ms=None, engine=_engine(running=4, tokens_per_s=400.0))  # 10 ms per token
    scores = target_scores({"slow": slow, "fast": fast}, 100, SETTINGS)
    assert scores["fast"] / scores["slow"] == pytest.approx((200 + 100 * 100) / (200 + 10 * 100))


def test_a_growing_queue_takes_share_before_ttft_changes() -> None:
    config = catalog()
    even = llama_stats({"vllm-a": 100, "vllm-b": 100, "vllm-c": 100})
    queued = {key: (replace(value, engine=_engine(waiting=12, running=4)) if key[1] == "vllm-a" else value)
              for key, value in even.items()}
    history, _ = run_ticks(config, [even, queued, queued, queued])
    before, after = weights(history[0]), weights(history[-1])
    assert after["vllm-a"] < before["vllm-a"]
    assert after["vllm-b"] > before["vllm-b"]
    carried = {d.name: d for d in route(history[-1], "us-east", LLAMA).deployments}  # every region's table
    assert carried["vllm-a"].HasField("engine") and carried["vllm-a"].engine.requests_waiting == 12
    assert not carried["vllm-b"].HasField("engine")


# ---- material change ----------------------------------------------------------------------------------------


def _table(engine: EngineFigures | None) -> routing_pb2.RoutingTable:
    deployment = routing_pb2.Deployment(name="a", weight=1.0)
    if engine is not None:
        deployment.engine.CopyFrom(engine.to_proto())
    return routing_pb2.RoutingTable(region="eu-west", models=[routing_pb2.ModelRoute(
        model=LLAMA, saturation=routing_pb2.SaturationSettings(max_requests_waiting=8, max_kv_cache_usage=0.95),
        deployments=[deployment])])


@pytest.mark.parametrize(("old", "new", "material"), [
    (None, None, False),
    (None, _engine(waiting=2), False),  # figures appear, nothing near a threshold: a live figure
    (_engine(waiting=2), None, False),
    (_engine(waiting=2), _engine(waiting=3, at_ms=20_000), False),
    (_engine(waiting=2), _engine(waiting=9), True),  # crosses max_requests_waiting
    (None, _engine(waiting=9), True),
    (_engine(waiting=9), _engine(waiting=2), True),  # back under
    (_engine(kv=0.5), _engine(kv=0.96), True),  # crosses max_kv_cache_usage
    (_engine(waiting=0, kv=0.1), _engine(waiting=0, kv=0.6), True),  # load moved by more than 0.25
    (_engine(waiting=9, at_ms=10_000), _engine(waiting=10, at_ms=12_000), False),  # still saturated, recent
    (_engine(waiting=9, at_ms=10_000), _engine(waiting=10, at_ms=15_000), True),  # still saturated, refreshed
])
def test_engine_figures_are_live_but_saturation_is_published(old: EngineFigures | None, new: EngineFigures | None,
                                                            material: bool) -> None:
    assert changed_materially(_table(old), _table(new)) is material
