"""The latency model: each profile's curve against load, table-driven and as properties."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.profiles import (
    CURVES,
    MAX_LOAD,
    Profile,
    base_multipliers,
    latency_multipliers,
    load_factor,
)

loads = st.floats(min_value=0.0, max_value=50.0, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32)


@pytest.mark.parametrize(
    ("profile", "load", "ttft", "itl"),
    [
        (Profile.DENSE, 0.0, 1.0, 1.0),
        (Profile.DENSE, 1.0, 1.5, 1.25),
        (Profile.DENSE, 4.0, 5.0, 3.0),
        (Profile.MOE, 1.0, 1.4, 1.2),
        (Profile.LINEAR_ATTENTION, 0.0, 1.0, 1.0),
        (Profile.LINEAR_ATTENTION, 1.0, 1.0, 1.0),
        (Profile.LINEAR_ATTENTION, 1.5, 12.0, 12.0),
        (Profile.LINEAR_ATTENTION, 2.0, 18.0, 18.0),
        (Profile.HYBRID, 1.0, 1.3, 1.225),
        (Profile.HYBRID, 2.0, (1.0 + 0.3 * 2.0**1.5) * 2.5 * 2.0, None),
    ],
)
def test_curve_values(profile: Profile, load: float, ttft: float, itl: float | None) -> None:
    got = base_multipliers(profile, load)
    assert got.ttft == pytest.approx(ttft)
    if itl is not None:
        assert got.itl == pytest.approx(itl)


@pytest.mark.parametrize(
    ("running", "waiting", "capacity", "load"),
    [(0, 0, 4, 0.0), (2, 0, 4, 0.5), (4, 0, 4, 1.0), (4, 4, 4, 2.0), (1, 0, 0, MAX_LOAD)],
)
def test_load_factor(running: int, waiting: int, capacity: int, load: float) -> None:
    assert load_factor(running, waiting, capacity) == load


@given(profile=st.sampled_from(Profile), low=loads, high=loads, seed=seeds)
def test_every_profile_is_monotone_in_load_for_the_same_draw(profile: Profile, low: float, high: float,
                                                              seed: int) -> None:
    low, high = min(low, high), max(low, high)
    at_low = latency_multipliers(profile, low, random.Random(seed))
    at_high = latency_multipliers(profile, high, random.Random(seed))
    assert at_low.ttft <= at_high.ttft * (1 + 1e-12)
    assert at_low.itl <= at_high.itl * (1 + 1e-12)


@given(profile=st.sampled_from(Profile), load=st.floats(allow_nan=False), seed=seeds)
def test_multipliers_are_positive_and_finite_at_any_load(profile: Profile, load: float, seed: int) -> None:
    got = latency_multipliers(profile, load, random.Random(seed))
    assert 0 < got.ttft < math.inf and 0 < got.itl < math.inf
    assert got.itl <= got.ttft * (1 + 1e-12)  # decoding never suffers more than prefill


@given(load=st.floats(min_value=0.0, max_value=1.0), seed=seeds)
def test_linear_attention_is_flat_below_saturation(load: float, seed: int) -> None:
    assert base_multipliers(Profile.LINEAR_ATTENTION, load).ttft == 1.0
    jittered = latency_multipliers(Profile.LINEAR_ATTENTION, load, random.Random(seed))
    assert 0.85 < jittered.ttft < 1.15


@given(load=st.floats(min_value=1.0, max_value=50.0, exclude_min=True), seed=seeds)
def test_linear_attention_falls_off_a_cliff_past_saturation(load: float, seed: int) -> None:
    flat = latency_multipliers(Profile.LINEAR_ATTENTION, 0.0, random.Random(seed))
    past = latency_multipliers(Profile.LINEAR_ATTENTION, load, random.Random(seed))
    assert past.ttft >= 5 * flat.ttft and past.itl >= 5 * flat.itl


@settings(max_examples=30)
@given(load=st.floats(min_value=0.0, max_value=4.0), seed=seeds)
def test_moe_scatters_more_than_dense_at_equal_load(load: float, seed: int) -> None:
    rng = random.Random(seed)
    dense = [latency_multipliers(Profile.DENSE, load, rng).ttft for _ in range(300)]
    moe = [latency_multipliers(Profile.MOE, load, rng).ttft for _ in range(300)]
    assert statistics.pvariance(moe) > statistics.pvariance(dense)
    def spread(draws: list[float]) -> float:
        return statistics.pstdev(draws) / statistics.fmean(draws)

    assert spread(moe) > 2 * spread(dense)


@pytest.mark.parametrize("load", [0.5, 2.0, 4.0])
def test_hybrid_lies_between_dense_and_linear_attention(load: float) -> None:
    dense, hybrid, linear = (base_multipliers(p, load).ttft
                             for p in (Profile.DENSE, Profile.HYBRID, Profile.LINEAR_ATTENTION))
    assert min(dense, linear) <= hybrid <= max(dense, linear)


def test_jitter_has_mean_one() -> None:
    rng = random.Random(7)
    draws = [latency_multipliers(Profile.MOE, 0.0, rng).ttft for _ in range(20_000)]
    assert statistics.fmean(draws) == pytest.approx(1.0, abs=0.02)


def test_every_profile_has_a_curve() -> None:
    assert set(CURVES) == set(Profile)
