"""The size model of a deployment: slopes fitted on values centred on their recent means, so requests of one size
teach nothing, a backend turning slow moves the level and not the slopes, and the architecture sets the shape."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_plane.deployments.latency_model import (
    LatencyModel,
    OnlineRegression,
    RequestSize,
    kv_context_feature,
    prefill_feature,
    request_size,
    shape_of,
)
from meridian_common.engine_figures import EngineFigures


def size(prompt: int, *, output: int = 200, running: float = 4.0, waiting: float = 0.0) -> RequestSize:
    return RequestSize(prompt, output, running, waiting, prompt)


def ttft_of(architecture: str, prompt: int, *, base_ms: float = 30.0, per_1k_ms: float = 20.0) -> float:
    """The simulator's curve: a fixed part plus prefill growing with the context for full attention."""
    growth = {"dense": 0.03, "moe": 0.05, "hybrid": 0.01, "linear-attention": 0.0}[architecture]
    kilo = prompt / 1000
    return base_ms + per_1k_ms * kilo * (1 + growth * kilo)


def train(model: LatencyModel, architecture: str, prompts: list[int], start: float = 0.0, **curve: float) -> float:
    now = start
    for prompt in prompts:
        now += 0.05
        model.learn(size(prompt), now, ttft_ms=ttft_of(architecture, prompt, **curve), tpot_ms=None)
    return now


@pytest.mark.parametrize("architecture", ["dense", "moe", "hybrid", "linear-attention"])
def test_the_prefill_slope_is_learned_and_predicts_other_sizes(architecture: str) -> None:
    rng = random.Random(7)
    prompts = [min(32_000, round(300 * math.exp(1.3 * rng.gauss(0, 1)))) for _ in range(400)]
    model = LatencyModel(architecture, decay_s=2.0, stale_after_s=10.0)
    now = train(model, architecture, prompts)
    view = model.view(now)
    assert view.prefill_slope_ms == pytest.approx(20.0, rel=0.05)
    # From the recent answers' mean, a request of another size is predicted within a few percent.
    mean_prefill = view.mean_prefill
    level = 30.0 + 20.0 * mean_prefill  # what those answers averaged, by construction of the curve
    for prompt in (50, 2_000, 16_000, 32_000):
        assert view.ttft_ms(level, size(prompt), tpot_ms=5.0) == pytest.approx(ttft_of(architecture, prompt),
                                                                              rel=0.05, abs=1.0)


def test_requests_of_one_size_teach_no_slope_and_the_prior_stands() -> None:
    model = LatencyModel("dense", decay_s=2.0, stale_after_s=10.0)
    now = train(model, "dense", [500] * 200, per_1k_ms=80.0)
    assert model.view(now).prefill_slope_ms == pytest.approx(10.0)  # the prior: nothing told it otherwise


def test_a_backend_turning_slow_moves_the_level_not_the_slope() -> None:
    rng = random.Random(3)
    prompts = [rng.choice((200, 1_000, 4_000, 8_000)) for _ in range(300)]
    model = LatencyModel("dense", decay_s=2.0, stale_after_s=10.0)
    now = train(model, "dense", prompts)
    before = model.view(now).prefill_slope_ms
    now = train(model, "dense", prompts[:8], start=now, base_ms=1_500.0)  # every answer starts 1.5 s late
    assert model.view(now).prefill_slope_ms == pytest.approx(before, rel=0.25)


def test_linear_attention_decoding_is_flat_in_context_and_dense_is_not() -> None:
    dense, linear = shape_of("dense"), shape_of("linear-attention")
    assert kv_context_feature(size(32_000), linear) == 0.0
    assert kv_context_feature(size(32_000), dense) > kv_context_feature(size(1_000), dense)
    assert prefill_feature(size(32_000), linear) == pytest.approx(32.0)
    assert prefill_feature(size(32_000), dense) == pytest.approx(32.0 * (1 + 0.03 * 32))
    assert shape_of("something-new") == shape_of("dense")  # undeclared: assumed to be full attention


def test_tpot_learns_the_batch_and_context_slopes() -> None:
    rng = random.Random(5)
    model = LatencyModel("dense", decay_s=2.0, stale_after_s=10.0)
    now = 0.0
    for _ in range(400):
        now += 0.05
        request = size(rng.choice((500, 4_000, 16_000)), running=rng.randint(1, 30))
        observed = 4.0 + 0.2 * request.running + 0.1 * kv_context_feature(request, model.shape)
        model.learn(request, now, ttft_ms=None, tpot_ms=observed)
    view = model.view(now)
    assert view.running_slope_ms == pytest.approx(0.2, rel=0.05)
    assert view.kv_context_slope_ms == pytest.approx(0.1, rel=0.1)


def test_the_queue_adds_its_wait_and_the_level_drops_the_waits_it_had() -> None:
    model = LatencyModel("dense", decay_s=2.0, stale_after_s=10.0)
    now = 0.0
    for _ in range(100):  # answers that each waited behind 2 requests of a 4-request batch
        now += 0.05
        model.learn(size(1_000, waiting=2.0), now, ttft_ms=None, tpot_ms=5.0)
        model.learn(size(1_000, waiting=2.0), now, ttft_ms=50.0 + 2 * (50.0 + 5.0 * 200) / 4, tpot_ms=None)
    view = model.view(now)
    assert view.mean_queue_wait_ms == pytest.approx(525.0, rel=0.01)
    level = 575.0  # the recent mean of those answers' TTFT, waits included
    assert view.ttft_ms(level, size(1_000), tpot_ms=5.0) == pytest.approx(50.0, rel=0.01)  # no queue now
    assert view.ttft_ms(level, size(1_000, waiting=4.0), tpot_ms=5.0) == pytest.approx(50.0 + 4 * 1050 / 4, rel=0.01)


def test_request_size_takes_the_engine_over_this_routers_own_count() -> None:
    engine = EngineFigures(requests_running=10, requests_waiting=3)
    assert request_size(4_000, 1_000, 200, engine, in_flight=2) == RequestSize(3_000, 200, 10, 3, 4_000)
    assert request_size(4_000, 5_000, 200, None, in_flight=2) == RequestSize(0, 200, 2, 0.0, 4_000)


def test_errors_are_kept_for_the_prediction_and_the_size_blind_mean() -> None:
    model = LatencyModel("dense", decay_s=2.0, stale_after_s=10.0)
    model.learn(size(100), 1.0, ttft_ms=100.0, tpot_ms=None, predicted=(90.0, 0.0), baseline=(150.0, None))
    report = model.report(1.0)
    assert report["ttft"] == {"prefill_ms_per_unit": 10.0, "answers": 0, "mape": 0.1, "size_blind_mape": 0.5}


def test_the_view_is_kept_until_an_answer_or_staleness_changes_it() -> None:
    model = LatencyModel("dense", decay_s=2.0, stale_after_s=10.0)
    model.learn(size(100), 1.0, ttft_ms=100.0, tpot_ms=5.0)
    first = model.view(2.0)
    assert model.view(5.0) is first
    assert model.view(12.0).mean_prefill == 0.0  # stale: nothing recent to centre on


@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e6, 1e6)), min_size=1, max_size=60))
def test_the_regression_stays_finite_and_non_negative(points: list[tuple[float, float]]) -> None:
    regression = OnlineRegression((10.0,), (1e4,), forgetting=0.99)
    for feature, observed in points:
        regression.learn((feature,), observed)
    (slope,) = regression.coefficients
    assert math.isfinite(slope) and slope >= 0.0
