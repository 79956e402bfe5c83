"""DeploymentStats: windowed quantiles equal those of the mergeable histograms, error rate, TTFT,
tokens/s, in-flight accounting and the refresh cache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.stats import EMPTY_VIEW, DeploymentStats, quantiles
from meridian_common.histogram import BOUNDS_MS, Histogram, merged

QS = (0.0001, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)
latencies = st.floats(min_value=0.0, max_value=900_000.0, allow_nan=False)


def test_empty_view_is_all_zero() -> None:
    assert DeploymentStats().view(10.0) == EMPTY_VIEW


def test_in_flight_is_live_and_never_negative() -> None:
    stats = DeploymentStats(refresh_s=60.0)
    assert stats.view(0.0).in_flight == 0
    stats.begin(0.0)
    stats.begin(0.0)
    assert stats.view(0.0).in_flight == 2  # cached figures, live in_flight
    stats.end(0.1, started=0.0, latency_ms=10.0, ok=True)
    stats.abandon(0.0)
    stats.abandon(0.0)
    assert stats.in_flight == 0
    assert stats.view(0.2).in_flight == 0


@pytest.mark.parametrize(
    ("outcomes", "requests", "errors", "error_rate"),
    [
        ([], 0, 0, 0.0),
        ([True] * 4, 4, 0, 0.0),
        ([True, False, True, False], 4, 2, 0.5),
        ([False] * 3, 3, 3, 1.0),
    ],
)
def test_error_rate_over_the_window(outcomes: list[bool], requests: int, errors: int,
                                    error_rate: float) -> None:
    stats = DeploymentStats(refresh_s=0.0)
    for ok in outcomes:
        stats.begin(1.0)
        stats.end(1.0, started=1.0, latency_ms=50.0, ok=ok)
    view = stats.view(1.0)
    assert (view.requests, view.errors, view.error_rate) == (requests, errors, error_rate)


def test_failures_do_not_make_a_deployment_look_fast() -> None:
    stats = DeploymentStats(refresh_s=0.0)
    for _ in range(10):
        stats.end(1.0, started=1.0, latency_ms=400.0, ok=True)
    for _ in range(50):
        stats.end(1.0, started=1.0, latency_ms=1.0, ok=False)  # connection refused at once
    view = stats.view(1.0)
    assert view.p50_ms > 300.0
    assert stats.latency.snapshot(1.0).count == 10


def test_window_slides() -> None:
    stats = DeploymentStats(window_s=30.0, refresh_s=0.0)
    stats.end(0.0, started=0.0, latency_ms=1000.0, ok=False)
    stats.end(0.0, started=0.0, latency_ms=1000.0, ok=True)
    stats.end(20.0, started=20.0, latency_ms=10.0, ok=True)
    assert stats.view(20.0).requests == 3
    late = stats.view(31.0)  # the slot of t=0 left the window
    assert (late.requests, late.errors) == (1, 0)
    assert late.p99_ms == pytest.approx(Histogram.of([10.0]).quantile(0.99))
    assert stats.view(100.0) == EMPTY_VIEW


def test_view_is_recomputed_at_most_every_refresh() -> None:
    stats = DeploymentStats(refresh_s=0.5)
    stats.end(1.0, started=1.0, latency_ms=100.0, ok=True)
    first = stats.view(1.0)
    stats.end(1.1, started=1.1, latency_ms=100.0, ok=False)
    assert stats.view(1.2) is first
    assert stats.view(1.5).errors == 1


def test_streams_give_ttft_and_tokens_per_second() -> None:
    stats = DeploymentStats(refresh_s=0.0)
    stats.end(1.0, started=1.0, latency_ms=1100.0, ok=True, ttft_ms=100.0, output_tokens=50)  # 50 tokens in 1.0 s
    stats.end(1.0, started=1.0, latency_ms=2000.0, ok=True, output_tokens=150)  # non-stream: 150 tokens in 2.0 s
    view = stats.view(1.0)
    assert view.tokens_per_s == pytest.approx(200 / 3.0)
    assert view.ttft_p95_ms == pytest.approx(Histogram.of([100.0]).quantile(0.95))
    assert view.p50_ms == pytest.approx(Histogram.of([1100.0, 2000.0]).quantile(0.5))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(latencies, max_size=40), min_size=1, max_size=5))
def test_merged_histograms_have_the_quantiles_of_the_union(parts: list[list[float]]) -> None:
    union = Histogram.of([v for part in parts for v in part])
    combined = merged([Histogram.of(part) for part in parts])
    assert combined.counts == union.counts
    for q in QS:
        assert combined.quantile(q) == union.quantile(q)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=120.0), latencies, st.booleans(),
                          st.one_of(st.none(), latencies)), max_size=60),
       st.floats(min_value=0.0, max_value=200.0))
def test_view_quantiles_equal_the_windowed_histograms(
    events: list[tuple[float, float, bool, float | None]], extra_s: float
) -> None:
    stats = DeploymentStats(window_s=30.0, refresh_s=0.0)
    now = 0.0
    for step, latency_ms, ok, ttft_ms in events:
        now += step / 10
        stats.end(now, started=now, latency_ms=latency_ms, ok=ok, ttft_ms=ttft_ms)
    now += extra_s / 10
    view = stats.view(now)
    latency, ttft = stats.latency.snapshot(now), stats.ttft.snapshot(now)
    assert (view.p50_ms, view.p95_ms, view.p99_ms) == tuple(latency.quantile(q) for q in (0.5, 0.95, 0.99))
    assert view.ttft_p95_ms == ttft.quantile(0.95)


@settings(max_examples=60, deadline=None)
@given(st.lists(latencies, max_size=50))
def test_quantiles_match_histogram_quantile(values: list[float]) -> None:
    histogram = Histogram.of(values)
    assert quantiles(histogram.counts, histogram.count, QS) == tuple(histogram.quantile(q) for q in QS)


def test_overflow_bucket_matches_histogram_quantile() -> None:
    histogram = Histogram.of([BOUNDS_MS[-1] * 2, 5.0])
    assert quantiles(histogram.counts, histogram.count, (0.99,)) == (histogram.quantile(0.99),)


def test_the_oldest_request_in_flight_shows_a_backend_turning_slow() -> None:
    stats = DeploymentStats(refresh_s=0.0)
    for _ in range(100):
        stats.begin(0.0)
        stats.end(0.01, started=0.0, latency_ms=10.0, ok=True)
    stats.begin(1.0)  # the backend stalls from here on
    stats.begin(1.4)
    view = stats.view(1.6)
    assert view.p95_ms < 20.0 and view.oldest_in_flight_ms == pytest.approx(600.0)
    stats.end(1.7, started=1.0, latency_ms=700.0, ok=True)
    assert stats.view(1.7).oldest_in_flight_ms == pytest.approx(300.0)
    stats.abandon(1.4)
    assert stats.view(1.8).oldest_in_flight_ms == 0.0 and stats.in_flight == 0
