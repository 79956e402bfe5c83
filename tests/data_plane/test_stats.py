"""DeploymentStats: the recent (time-decayed) TTFT and TPOT that prediction reads, their window p95s, the
error rate, answer lengths, in-flight accounting, streams waiting for a first token and the refresh cache."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.deployments.stats import EMPTY_VIEW, DecayingMean, DeploymentStats, RollingHistogram, quantiles
from meridian_common.histogram import BOUNDS_MS, Histogram, merged

QS = (0.0001, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)
latencies = st.floats(min_value=0.0, max_value=900_000.0, allow_nan=False)


def test_empty_view_is_all_zero() -> None:
    view = DeploymentStats().view(10.0)
    assert view.requests == view.answers == view.in_flight == 0
    assert view.ttft_ms is None and view.tpot_ms is None and view.idle_s == math.inf
    assert view == EMPTY_VIEW


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
        stats.end(1.0, started=1.0, latency_ms=400.0, ok=True, ttft_ms=300.0, tpot_ms=20.0, output_tokens=5)
    for _ in range(50):
        stats.end(1.0, started=1.0, latency_ms=1.0, ok=False)  # connection refused at once
    view = stats.view(1.0)
    assert view.ttft_ms == pytest.approx(300.0) and view.tpot_ms == pytest.approx(20.0)
    assert view.latency_p50_ms > 300.0 and (view.answers, view.output_tokens) == (10, 50)


def test_window_slides() -> None:
    stats = DeploymentStats(window_s=10.0, refresh_s=0.0)
    stats.end(0.0, started=0.0, latency_ms=1000.0, ok=False)
    stats.end(0.0, started=0.0, latency_ms=1000.0, ok=True, ttft_ms=900.0)
    stats.end(6.0, started=6.0, latency_ms=10.0, ok=True, ttft_ms=5.0)
    assert stats.view(6.0).requests == 3
    late = stats.view(10.5)  # the slot of t=0 left the window
    assert (late.requests, late.errors, late.answers) == (1, 0, 1)
    assert late.ttft_p95_ms == pytest.approx(Histogram.of([5.0]).quantile(0.95))
    assert stats.view(100.0).requests == 0


def test_view_is_recomputed_at_most_every_refresh_unless_a_sample_arrives() -> None:
    stats = DeploymentStats(refresh_s=0.5)
    stats.end(1.0, started=1.0, latency_ms=100.0, ok=True)
    assert stats.view(1.0).requests == 1
    stats.end(1.1, started=1.1, latency_ms=100.0, ok=False)
    assert stats.view(1.2).requests == 1  # a failure waits for the refresh
    assert stats.view(1.5).errors == 1
    stats.end(1.6, started=1.6, latency_ms=100.0, ok=True, ttft_ms=50.0)
    assert stats.view(1.6).ttft_ms is not None  # an answer's timings show at once


def test_the_newest_answers_dominate_the_recent_estimate() -> None:
    stats = DeploymentStats(refresh_s=0.0, decay_s=2.0, stale_after_s=10.0)
    for i in range(50):  # a slow spell, then silence, then one good answer
        stats.end(i * 0.1, started=i * 0.1, latency_ms=2000.0, ok=True, ttft_ms=900.0, tpot_ms=40.0)
    stats.end(9.0, started=8.9, latency_ms=100.0, ok=True, ttft_ms=60.0, tpot_ms=5.0)
    view = stats.view(9.0)  # 4.1 s after the slow spell: the one good answer weighs 1 - exp(-4.1 / 2) = 0.87
    assert view.ttft_ms == pytest.approx(900.0 + (60.0 - 900.0) * (1 - math.exp(-4.1 / 2)))
    assert view.tpot_ms is not None and view.tpot_ms < 10.0


def test_a_figure_goes_stale_and_a_probe_refreshes_it() -> None:
    stats = DeploymentStats(refresh_s=0.0, stale_after_s=5.0)
    stats.end(0.0, started=0.0, latency_ms=100.0, ok=True, ttft_ms=50.0, tpot_ms=5.0)
    assert stats.view(4.9).tpot_ms == pytest.approx(5.0)
    assert stats.view(5.1).ttft_ms is None and stats.view(5.1).tpot_ms is None
    stats.record_probe(6.0, 70.0, None)  # a one-token probe: no TPOT
    view = stats.view(6.0)
    assert view.ttft_ms == pytest.approx(70.0) and view.tpot_ms is None
    stats.record_probe(6.5, 70.0, 4.0)
    assert stats.view(6.5).tpot_ms == pytest.approx(4.0)
    assert view.ttft_p95_ms == pytest.approx(Histogram.of([50.0]).quantile(0.95))  # probes stay out of the window
    assert stats.view(6.5).answers == 1


def test_a_probe_is_all_that_is_known_of_a_deployment_without_answers() -> None:
    stats = DeploymentStats(refresh_s=0.0, decay_s=2.0)
    stats.end(0.0, started=0.0, latency_ms=100.0, ok=True, ttft_ms=900.0, tpot_ms=40.0)
    stats.record_probe(0.5, 300.0, 20.0)  # an answer since the last probe: one more sample
    assert 300.0 < (stats.view(0.5).ttft_ms or 0.0) < 900.0
    stats.record_probe(2.5, 20.0, 4.0)  # nothing answered since: the probe is what is known now
    view = stats.view(2.5)
    assert view.ttft_ms == pytest.approx(20.0) and view.tpot_ms == pytest.approx(4.0)


def test_a_whole_answers_derived_ttft_never_moves_the_estimate() -> None:
    """A whole answer's TTFT is the estimate itself: fed back, it would anchor the TTFT where it was while the
    streams and probes measure it rising."""
    stats = DeploymentStats(refresh_s=0.0)
    stats.end(1.0, started=0.9, latency_ms=100.0, ok=True, ttft_ms=20.0, tpot_ms=5.0)  # a stream
    for i in range(20):
        stats.end(1.1 + i * 0.01, started=1.0, latency_ms=900.0, ok=True, ttft_ms=20.0, tpot_ms=8.0,
                  ttft_measured=False)
    assert stats.view(1.3).ttft_ms == pytest.approx(20.0)
    assert stats.view(1.3).tpot_ms is not None and stats.view(1.3).tpot_ms > 6.0  # their TPOT counts
    assert stats.view(1.3).ttft_p95_ms < 30.0  # the window still holds them, for operators
    stats.record_probe(1.5, 620.0, 5.0)  # the link got 600 ms slower: weighed against the stream at 1.0 s only
    assert stats.view(1.5).ttft_ms == pytest.approx(20.0 + 600.0 * (1 - math.exp(-0.5 / 2.0)))


def test_a_stream_waiting_for_its_first_token_shows_a_backend_turning_slow() -> None:
    stats = DeploymentStats(refresh_s=0.0)
    stats.begin(1.0, awaiting_first_token=True)  # the backend stalls from here on
    stats.begin(1.4, awaiting_first_token=True)
    stats.begin(1.2)  # a whole answer in flight does not count
    assert stats.view(1.6).waiting_first_token_ms == pytest.approx(600.0)
    stats.first_token(1.0)
    assert stats.view(1.7).waiting_first_token_ms == pytest.approx(300.0)
    stats.abandon(1.4)
    assert stats.view(1.8).waiting_first_token_ms == 0.0


def test_idle_since_the_last_request_sent() -> None:
    stats = DeploymentStats(refresh_s=0.0)
    stats.begin(3.0)
    assert stats.view(5.5).idle_s == pytest.approx(2.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=10_000.0), min_size=1, max_size=30),
       st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=30, max_size=30))
def test_a_decaying_mean_stays_within_its_samples(values: list[float], gaps: list[float]) -> None:
    mean = DecayingMean(decay_s=2.0, stale_after_s=100.0)
    now = 0.0
    for value, gap in zip(values, gaps, strict=False):
        now += gap
        mean.add(value, now)
    result = mean.value(now)
    assert result is not None and min(values) - 1e-6 <= result <= max(values) + 1e-6


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(latencies, max_size=40), min_size=1, max_size=5))
def test_merged_histograms_have_the_quantiles_of_the_union(parts: list[list[float]]) -> None:
    union = Histogram.of([v for part in parts for v in part])
    combined = merged([Histogram.of(part) for part in parts])
    assert combined.counts == union.counts
    for q in QS:
        assert combined.quantile(q) == union.quantile(q)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=40.0), latencies), max_size=60),
       st.floats(min_value=0.0, max_value=200.0))
def test_rolling_quantiles_equal_those_of_the_samples_still_in_the_window(
    events: list[tuple[float, float]], extra_s: float
) -> None:
    rolling = RollingHistogram(window_s=10.0, slots=10)
    now, recorded = 0.0, []
    for step, value in events:
        now += step / 10
        rolling.record(value, now)
        recorded.append((now, value))
    now += extra_s / 10
    oldest_slot = int(now // 1.0) - 9
    kept = Histogram.of([v for at, v in recorded if int(at // 1.0) >= oldest_slot])
    assert rolling.quantiles(now, QS) == tuple(kept.quantile(q) for q in QS)


@settings(max_examples=60, deadline=None)
@given(st.lists(latencies, max_size=50))
def test_quantiles_match_histogram_quantile(values: list[float]) -> None:
    histogram = Histogram.of(values)
    assert quantiles(histogram.counts, histogram.count, QS) == tuple(histogram.quantile(q) for q in QS)


def test_overflow_bucket_matches_histogram_quantile() -> None:
    histogram = Histogram.of([BOUNDS_MS[-1] * 2, 5.0])
    assert quantiles(histogram.counts, histogram.count, (0.99,)) == (histogram.quantile(0.99),)
