"""The token bucket: continuous refill, never below zero nor above capacity, settlement, waits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_plane.limits.token_bucket import TokenBucket


def test_refills_continuously_up_to_capacity() -> None:
    bucket = TokenBucket.full(60, 1.0, now=0.0)
    assert bucket.try_take(60, 0.0)
    assert not bucket.try_take(1, 0.5)
    assert bucket.remaining(0.5) == pytest.approx(0.5)
    assert bucket.try_take(1, 1.0)
    assert bucket.remaining(1000.0) == 60


@pytest.mark.parametrize(("level", "n", "expected"), [
    (0.0, 1, 1.0),      # one token at 1/s
    (0.5, 1, 0.5),
    (2.0, 1, 0.0),      # already there
    (0.0, 61, math.inf),  # more than the bucket can ever hold
])
def test_retry_after(level: float, n: float, expected: float) -> None:
    bucket = TokenBucket(60, 1.0, level, 0.0)
    assert bucket.retry_after_s(n, 0.0) == pytest.approx(expected)


def test_settle_charges_the_real_usage_and_refunds_an_overestimate() -> None:
    bucket = TokenBucket.full(1000, 0.0, now=0.0)
    assert bucket.try_take(100, 0.0)
    assert bucket.settle(100, 300, 0.0) == pytest.approx(200)  # used more than estimated
    assert bucket.remaining(0.0) == 700
    bucket.settle(100, 40, 0.0)  # used less: the difference comes back
    assert bucket.remaining(0.0) == 760
    assert bucket.settle(0, 10_000, 0.0) == pytest.approx(760)  # a shortfall beyond the level is forgiven
    assert bucket.remaining(0.0) == 0


def test_reconfigure_keeps_what_was_used() -> None:
    bucket = TokenBucket.full(100, 0.0, now=0.0)
    bucket.try_take(30, 0.0)
    bucket.reconfigure(200, 0.0, 0.0)
    assert bucket.remaining(0.0) == 170
    bucket.reconfigure(20, 0.0, 0.0)
    assert bucket.remaining(0.0) == 0


def test_reset_is_the_time_to_full() -> None:
    bucket = TokenBucket(60, 2.0, 50, 0.0)
    assert bucket.reset_s(0.0) == pytest.approx(5.0)
    assert bucket.reset_s(10.0) == 0.0


operations = st.lists(st.tuples(
    st.sampled_from(["take", "add", "settle", "reconfigure"]),
    st.floats(0, 500, allow_nan=False), st.floats(0, 500, allow_nan=False), st.floats(0, 5, allow_nan=False),
), max_size=60)


@given(st.floats(0, 1000), st.floats(0, 100), operations)
def test_level_stays_within_zero_and_capacity(capacity: float, rate: float,
                                              ops: list[tuple[str, float, float, float]]) -> None:
    bucket = TokenBucket.full(capacity, rate, now=0.0)
    now = 0.0
    for op, a, b, step in ops:
        now += step
        before = bucket.remaining(now)
        if op == "take":
            taken = bucket.try_take(a, now)
            assert taken == (a <= before)
        elif op == "add":
            bucket.add(a - b, now)
        elif op == "settle":
            bucket.settle(a, b, now)
        else:
            bucket.reconfigure(a, b / 10, now)
        assert 0.0 <= bucket.level <= bucket.capacity


@given(st.floats(1, 1000), st.floats(0.01, 100), st.floats(0, 100))
def test_refill_is_bounded_by_rate_and_capacity(capacity: float, rate: float, elapsed: float) -> None:
    bucket = TokenBucket(capacity, rate, 0.0, 0.0)
    assert bucket.remaining(elapsed) == pytest.approx(min(capacity, rate * elapsed))
