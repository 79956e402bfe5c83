"""An answer's TTFT and TPOT: measured on streams, derived for whole answers from their total time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.serving.answer_timing import AnswerTiming, overdue_after_ms, streamed_timing, whole_answer_timing

times = st.floats(min_value=0.0, max_value=600_000.0, allow_nan=False)
tokens = st.integers(min_value=0, max_value=8192)


@pytest.mark.parametrize(
    ("total_ms", "tokens", "estimate_ms", "expected"),
    [
        (1260.0, 201, 60.0, AnswerTiming(60.0, 6.0)),  # 200 tokens after the first at 6 ms
        (1260.0, 201, None, AnswerTiming(1260.0 / 201, 1260.0 / 201)),  # no estimate yet: every token alike
        (40.0, 3, 60.0, AnswerTiming(40.0, 0.0)),  # faster than the estimate: the TTFT is capped by the total
        (90.0, 1, 60.0, AnswerTiming(90.0, None)),  # one token: all of it is the first
        (90.0, 0, None, AnswerTiming(90.0, None)),
    ],
)
def test_whole_answer_timing(total_ms: float, tokens: int, estimate_ms: float | None,
                             expected: AnswerTiming) -> None:
    timing = whole_answer_timing(total_ms, tokens, estimate_ms)
    assert timing.ttft_ms == pytest.approx(expected.ttft_ms)
    assert timing.tpot_ms == (None if expected.tpot_ms is None else pytest.approx(expected.tpot_ms))


@pytest.mark.parametrize(
    ("total_ms", "first_ms", "tokens", "expected"),
    [
        (1260.0, 60.0, 201, AnswerTiming(60.0, 6.0)),
        (100.0, 100.0, 1, AnswerTiming(100.0, None)),
        (100.0, 150.0, 5, AnswerTiming(100.0, 0.0)),  # a first byte after the end cannot be: capped
    ],
)
def test_streamed_timing(total_ms: float, first_ms: float, tokens: int, expected: AnswerTiming) -> None:
    timing = streamed_timing(total_ms, first_ms, tokens)
    assert timing.ttft_ms == pytest.approx(expected.ttft_ms)
    assert timing.tpot_ms == (None if expected.tpot_ms is None else pytest.approx(expected.tpot_ms))


@settings(max_examples=200, deadline=None)
@given(times, tokens, st.one_of(st.none(), times))
def test_a_whole_answer_is_split_without_losing_or_inventing_time(total_ms: float, count: int,
                                                                 estimate_ms: float | None) -> None:
    timing = whole_answer_timing(total_ms, count, estimate_ms)
    assert 0.0 <= timing.ttft_ms <= total_ms
    if timing.tpot_ms is None:
        assert count < 2 and timing.ttft_ms == total_ms
    else:
        assert timing.tpot_ms >= 0.0
        if estimate_ms is not None:
            assert timing.ttft_ms + timing.tpot_ms * (count - 1) == pytest.approx(total_ms, rel=1e-9, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(times, times, tokens)
def test_a_stream_is_split_without_losing_or_inventing_time(total_ms: float, first_ms: float, count: int) -> None:
    timing = streamed_timing(total_ms, first_ms, count)
    assert 0.0 <= timing.ttft_ms <= total_ms
    if timing.tpot_ms is not None:
        assert timing.ttft_ms + timing.tpot_ms * (count - 1) == pytest.approx(total_ms, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize(
    ("streaming", "ttft_ms", "tpot_ms", "rtt_ms", "max_tokens", "after_ms"),
    [
        (True, 500.0, 25.0, 0.0, None, 500.0),  # a stream: its first token is due by the TTFT threshold
        (True, 500.0, 25.0, 80.0, 200, 580.0),  # plus the round trip to a remote region
        (False, 500.0, 25.0, 0.0, 201, 500.0 + 25.0 * 200),  # a capped whole answer at the worst allowed pace
        (False, 500.0, 25.0, 0.0, None, None),  # uncapped: it may legitimately be long
        (False, 500.0, 0.0, 0.0, 201, None),  # no TPOT threshold: no worst pace
        (True, 0.0, 25.0, 0.0, 201, None),  # no TTFT threshold: nothing is certain
    ],
)
def test_when_a_request_is_certainly_slow(streaming: bool, ttft_ms: float, tpot_ms: float, rtt_ms: float,
                                          max_tokens: int | None, after_ms: float | None) -> None:
    assert overdue_after_ms(streaming=streaming, ttft_threshold_ms=ttft_ms, tpot_threshold_ms=tpot_ms,
                            rtt_ms=rtt_ms, max_tokens=max_tokens) == after_ms
