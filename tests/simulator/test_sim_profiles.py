"""The latency model: each profile's curve against load and against prompt and context length, and the KV
cache it reserves, table-driven and as properties."""

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
    context_multiplier,
    itl_multiplier,
    kv_tokens,
    latency_multipliers,
    load_factor,
    prefill_ms,
    time_to_first_token_ms,
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


# --- Size and architecture: prefill against prompt length, decoding against context, KV reserved ---------


@pytest.mark.parametrize(
    ("profile", "prompt", "cached", "expected_ms"),
    [
        (Profile.DENSE, 0, 0, 0.0),
        (Profile.DENSE, 1000, 0, 10.0 * 1.0 * 1.03),
        (Profile.DENSE, 6000, 0, 10.0 * 6.0 * 1.18),
        (Profile.DENSE, 32_000, 0, 10.0 * 32.0 * 1.96),
        (Profile.DENSE, 32_000, 30_000, 10.0 * 2.0 * 1.96),  # a prefix hit skips tokens, not the attention to them
        (Profile.MOE, 32_000, 0, 10.0 * 32.0 * 2.6),
        (Profile.HYBRID, 32_000, 0, 10.0 * 32.0 * 1.32),
        (Profile.LINEAR_ATTENTION, 32_000, 0, 10.0 * 32.0),
        (Profile.LINEAR_ATTENTION, 300, 0, 3.0),
        (Profile.DENSE, 100, 500, 0.0),  # more cached than asked: nothing to compute
    ],
)
def test_prefill_time_grows_with_the_uncached_prompt(profile: Profile, prompt: int, cached: int,
                                                     expected_ms: float) -> None:
    assert prefill_ms(profile, 10.0, prompt, cached) == pytest.approx(expected_ms)


@pytest.mark.parametrize(
    ("profile", "context", "expected"),
    [
        (Profile.DENSE, 0, 1.0),
        (Profile.DENSE, 10_000, 1.2),
        (Profile.MOE, 10_000, 1.3),
        (Profile.HYBRID, 10_000, 1.06),
        (Profile.LINEAR_ATTENTION, 10_000, 1.0),
        (Profile.LINEAR_ATTENTION, 1_000_000, 1.0),
    ],
)
def test_decoding_cost_grows_with_context_except_for_linear_attention(profile: Profile, context: int,
                                                                      expected: float) -> None:
    assert context_multiplier(profile, context) == pytest.approx(expected)
    assert itl_multiplier(profile, 0.0, 1.0, context) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("ttft_ms", "prompt", "cached", "multiplier", "expected_ms"),
    [
        (25.0, 0, 0, 1.0, 25.0),
        (25.0, 1000, 0, 2.0, (25.0 + 10.3) * 2.0),
        (25.0, 1000, 999, 1.0, 25.0 + 0.0103),
        (0.0, 100_000, 0, 3.0, 0.0),  # the instant server stays instant, however long the prompt
    ],
)
def test_time_to_first_token_adds_prefill_before_the_load_multiplier(ttft_ms: float, prompt: int, cached: int,
                                                                     multiplier: float, expected_ms: float) -> None:
    got = time_to_first_token_ms(Profile.DENSE, ttft_ms, 10.0, prompt, cached, multiplier)
    assert got == pytest.approx(expected_ms)


def test_typical_prompts_add_milliseconds_and_long_ones_grow_faster_for_full_attention() -> None:
    assert prefill_ms(Profile.DENSE, 10.0, 300, 0) < 4.0  # the realistic median prompt
    assert prefill_ms(Profile.MOE, 10.0, 6000, 0) < 100.0  # its p99
    ratios = {p: prefill_ms(p, 10.0, 32_000, 0) / (32 * prefill_ms(p, 10.0, 1000, 0)) for p in Profile}
    assert ratios[Profile.LINEAR_ATTENTION] == pytest.approx(1.0)
    assert ratios[Profile.MOE] > ratios[Profile.DENSE] > ratios[Profile.HYBRID] > ratios[Profile.LINEAR_ATTENTION]


@given(profile=st.sampled_from(Profile), short=st.integers(0, 200_000), extra=st.integers(0, 200_000),
       per_1k=st.floats(0.0, 1000.0))
def test_prefill_and_decoding_never_get_cheaper_with_length(profile: Profile, short: int, extra: int,
                                                            per_1k: float) -> None:
    assert prefill_ms(profile, per_1k, short, 0) <= prefill_ms(profile, per_1k, short + extra, 0) * (1 + 1e-12)
    assert context_multiplier(profile, short) <= context_multiplier(profile, short + extra)


@pytest.mark.parametrize(
    ("profile", "prompt", "output", "reserved"),
    [
        (Profile.DENSE, 300, 200, 500),
        (Profile.MOE, 300, 200, 500),
        (Profile.HYBRID, 300, 200, 125),
        (Profile.HYBRID, 1, 2, 1),  # rounded up: a request always holds a block of its own
        (Profile.LINEAR_ATTENTION, 32_000, 4000, 0),
    ],
)
def test_kv_tokens_reserved_per_architecture(profile: Profile, prompt: int, output: int, reserved: int) -> None:
    assert kv_tokens(profile, prompt, output) == reserved
