"""The natural answer length (a request without max_tokens): fixed by default, log-normal around
`output_tokens` with a spread, drawn from the simulator's seeded random source and clipped to its bounds."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.live_state import SimulatorState
from simulator.settings import MAX_OUTPUT_TOKENS, SimulatorSettings


def _state(**settings: object) -> SimulatorState:
    return SimulatorState(SimulatorSettings(seed=11, **settings), started_unix=0)  # type: ignore[arg-type]


def test_without_a_spread_the_length_is_fixed_and_draws_nothing() -> None:
    state = _state(output_tokens=16)
    before = state.rng.getstate()
    assert [state.draw_output_tokens() for _ in range(5)] == [16] * 5
    assert state.rng.getstate() == before  # seeded runs keep the sequence they had


def test_with_a_spread_the_median_is_output_tokens() -> None:
    state = _state(output_tokens=200, output_tokens_sigma=0.8)
    lengths = [state.draw_output_tokens() for _ in range(4000)]
    assert statistics.median(lengths) == pytest.approx(200, rel=0.1)
    assert len(set(lengths)) > 100 and max(lengths) > 1000  # a long tail, not a constant


def test_a_seed_repeats_the_lengths() -> None:
    first, second = _state(output_tokens=50, output_tokens_sigma=1.0), _state(output_tokens=50, output_tokens_sigma=1.0)
    assert [first.draw_output_tokens() for _ in range(50)] == [second.draw_output_tokens() for _ in range(50)]


@given(st.integers(1, MAX_OUTPUT_TOKENS), st.floats(0, 4), st.integers(0, 2**32))
def test_lengths_stay_within_bounds(output_tokens: int, sigma: float, seed: int) -> None:
    state = SimulatorState(SimulatorSettings(output_tokens=output_tokens, output_tokens_sigma=sigma, seed=seed), 0)
    for _ in range(10):
        assert 1 <= state.draw_output_tokens() <= MAX_OUTPUT_TOKENS


def test_the_length_follows_the_settings_in_force() -> None:
    state = _state(output_tokens=30, output_tokens_sigma=0.5)
    state.apply(SimulatorSettings(seed=11, output_tokens=30))
    assert state.draw_output_tokens() == 30
