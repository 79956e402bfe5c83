"""Weight derivation: bounded shares, the EMA step limit and the publication dead band."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from control_plane.config import ComputeSettings
from control_plane.tables.weights import (
    ScoreInput,
    bounded_shares,
    damped,
    published,
    share_bounds,
    smoothing_factor,
    target_scores,
)

SETTINGS = ComputeSettings()
EPSILON = 1e-9

raw_scores = st.dictionaries(st.sampled_from("abcdefghij"), st.floats(min_value=0.0, max_value=1e6),
                             min_size=1)


@settings(max_examples=200, deadline=None)
@given(raw_scores)
@example({"a": 0.0, "b": 5e-324})  # a subnormal largest score once divided by zero
def test_bounded_shares_sum_to_one_within_bounds_and_keep_the_order(raw: dict[str, float]) -> None:
    floor, cap = share_bounds(len(raw), SETTINGS)
    shares = bounded_shares(raw, floor, cap)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(floor - EPSILON <= s <= cap + EPSILON for s in shares.values())
    for a in raw:
        for b in raw:
            if raw[a] > raw[b]:
                assert shares[a] >= shares[b] - EPSILON


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"a": 1.0}, {"a": 1.0}),
        ({"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.5}),
        ({"a": 3.0, "b": 1.0}, {"a": 0.75, "b": 0.25}),
        ({"a": 1.0, "b": 0.0}, {"a": 0.8, "b": 0.2}),
        ({"a": 100.0, "b": 1.0, "c": 1.0}, {"a": 0.8, "b": 0.1, "c": 0.1}),
        ({"a": 0.0, "b": 0.0}, {"a": 0.5, "b": 0.5}),
    ],
)
def test_bounded_shares_table(raw: dict[str, float], expected: dict[str, float]) -> None:
    assert bounded_shares(raw, *share_bounds(len(raw), SETTINGS)) == pytest.approx(expected)


def test_floors_never_take_more_than_half_the_traffic() -> None:
    floor, cap = share_bounds(40, SETTINGS)
    assert floor * 40 <= 0.5 and cap == SETTINGS.max_weight


TOKENS = 256


@pytest.mark.parametrize(
    ("inputs", "order"),
    [
        ({"fast": ScoreInput(1, 100, 20, 0, 0), "slow": ScoreInput(1, 200, 20, 0, 0)}, ["fast", "slow"]),
        ({"fluent": ScoreInput(1, 100, 15, 0, 0), "halting": ScoreInput(1, 100, 30, 0, 0)}, ["fluent", "halting"]),
        ({"near": ScoreInput(1, 100, 20, 0, 0), "far": ScoreInput(1, 100, 20, 0, 80)}, ["near", "far"]),
        ({"ok": ScoreInput(1, 100, 20, 0.0, 0), "flaky": ScoreInput(1, 100, 20, 0.3, 0)}, ["ok", "flaky"]),
        ({"big": ScoreInput(3, 100, 20, 0, 0), "small": ScoreInput(1, 100, 20, 0, 0)}, ["big", "small"]),
        ({"known": ScoreInput(1, 100, 20, 0, 0), "unknown": ScoreInput(1, None, None, 0, 50)},
         ["known", "unknown"]),
    ],
)
def test_target_scores_prefer_fast_near_healthy(inputs: dict[str, ScoreInput], order: list[str]) -> None:
    scores = target_scores(inputs, TOKENS, SETTINGS)
    assert sorted(scores, key=scores.__getitem__, reverse=True) == order


def test_target_scores_formula() -> None:
    scores = target_scores({"a": ScoreInput(2.0, 300.0, 10.0, 0.25, 100.0)}, 50, SETTINGS)
    assert scores["a"] == pytest.approx(2.0 * 0.75 / (300.0 + 10.0 * 50 + 100.0))


@pytest.mark.parametrize(
    ("output_tokens", "faster"),
    [(1, "quick-start"), (5, "quick-start"), (20, "quick-tokens"), (1000, "quick-tokens")],
)
def test_the_answer_length_decides_between_ttft_and_tpot(output_tokens: int, faster: str) -> None:
    # 100 + 40 x n against 300 + 20 x n: the first token matters for short answers, the pace for long ones.
    inputs = {"quick-start": ScoreInput(1, 100, 40, 0, 0), "quick-tokens": ScoreInput(1, 300, 20, 0, 0)}
    scores = target_scores(inputs, output_tokens, SETTINGS)
    assert max(scores, key=scores.__getitem__) == faster


def test_an_unknown_figure_is_assumed_to_be_the_median_of_the_known_ones() -> None:
    inputs = {"a": ScoreInput(1, 100, 10, 0, 0), "b": ScoreInput(1, 300, 30, 0, 0),
              "ttft-unknown": ScoreInput(1, None, 10, 0, 0), "tpot-unknown": ScoreInput(1, 100, None, 0, 0)}
    scores = target_scores(inputs, TOKENS, SETTINGS)
    assert scores["ttft-unknown"] == pytest.approx(1 / (100 + 10 * TOKENS))  # median TTFT of 100, 300, 100
    assert scores["tpot-unknown"] == pytest.approx(1 / (100 + 10 * TOKENS))  # median TPOT of 10, 30, 10


def test_without_any_figure_only_the_rtt_and_priors_tell_deployments_apart() -> None:
    scores = target_scores({"local": ScoreInput(1, None, None, 0, 0), "remote": ScoreInput(1, None, None, 0, 80)},
                           TOKENS, SETTINGS)
    # A cold start assumes a real LLM answer of several seconds: an 80 ms RTT costs a few per cent, not all.
    assert 0.95 < scores["remote"] / scores["local"] < 1.0


figure = st.floats(min_value=0.0, max_value=60_000.0)
maybe_figure = st.none() | figure
score_input = st.builds(ScoreInput, prior=st.floats(0.1, 10.0), ttft_ms=maybe_figure, tpot_ms=maybe_figure,
                        error_rate=st.floats(0.0, 1.0), added_latency_ms=st.floats(0.0, 500.0))


@settings(max_examples=300, deadline=None)
@given(score_input, st.dictionaries(st.sampled_from("bcde"), score_input, max_size=4),
       st.sampled_from(["ttft_ms", "tpot_ms"]), figure, st.floats(0.0, 10_000.0), st.integers(0, 4096))
def test_a_score_never_rises_when_its_ttft_or_tpot_rises(
    item: ScoreInput, others: dict[str, ScoreInput], name: str, start: float, rise: float, tokens: int
) -> None:
    before = replace(item, **{name: start})
    after = replace(item, **{name: start + rise})
    score_before = target_scores({"a": before, **others}, tokens, SETTINGS)["a"]
    score_after = target_scores({"a": after, **others}, tokens, SETTINGS)["a"]
    assert score_after <= score_before


shares_pair = st.integers(min_value=2, max_value=6).flatmap(
    lambda n: st.tuples(*[st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n)] * 2)
)


@settings(max_examples=200, deadline=None)
@given(shares_pair, st.floats(0.0, 1.0))
@example(([1.0, 1.0, 1.0], [1.0, 1.0, 0.59375]), 1.0)  # converging once jumped past the step limit
def test_damped_and_published_respect_the_step_limit_and_keep_the_sum(pair: tuple, fraction: float) -> None:
    names = [str(i) for i in range(len(pair[0]))]
    previous = bounded_shares(dict(zip(names, pair[0], strict=True)), 0.0, 1.0)
    target = bounded_shares(dict(zip(names, pair[1], strict=True)), 0.0, 1.0)
    smoothed = damped(previous, target, fraction, SETTINGS.max_weight_step)
    shown = published(previous, smoothed, SETTINGS.weight_hysteresis, SETTINGS.max_weight_step)
    for result in (smoothed, shown):
        assert sum(result.values()) == pytest.approx(1.0)
        assert max(abs(result[n] - previous[n]) for n in names) <= SETTINGS.max_weight_step + EPSILON


def test_published_ignores_moves_inside_the_dead_band() -> None:
    previous = {"a": 0.5, "b": 0.5}
    assert published(previous, {"a": 0.54, "b": 0.46}, 0.05, 0.1) == previous
    assert published(previous, {"a": 0.56, "b": 0.44}, 0.05, 0.1) == pytest.approx({"a": 0.56, "b": 0.44})
    assert published(previous, {"a": 0.9, "b": 0.1}, 0.05, 0.1) == pytest.approx({"a": 0.6, "b": 0.4})


@pytest.mark.parametrize(("elapsed_s", "expected"), [(0.0, 0.0), (-5.0, 0.0), (10.0, 0.632), (1e9, 1.0)])
def test_smoothing_factor_follows_the_time_constant(elapsed_s: float, expected: float) -> None:
    assert smoothing_factor(elapsed_s, SETTINGS) == pytest.approx(expected, abs=1e-3)
