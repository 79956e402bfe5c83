"""Merging telemetry from many routers: counters add, histograms merge exactly, gauges take the latest."""

from __future__ import annotations

import pytest
from compute_fixtures import LLAMA, sample
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.telemetry.merge import merge_samples
from meridian_common.histogram import Histogram
from meridian_proto import telemetry_pb2


def test_counters_add_and_error_rate_is_over_all_routers() -> None:
    merged = merge_samples([
        sample("r1", LLAMA, "vllm-a", [100.0] * 27, errors=3, tpots_ms=[10.0] * 27),
        sample("r2", LLAMA, "vllm-a", [200.0] * 63, errors=7, region="us-east", tpots_ms=[30.0] * 63),
        sample("r1", LLAMA, "vllm-b", [50.0] * 10),
    ])
    a = merged[(LLAMA, "vllm-a")]
    assert (a.requests, a.errors, a.successes, a.error_rate) == (100, 10, 90, pytest.approx(0.1))
    assert a.routers == frozenset({"r1", "r2"}) and a.deployment_region == "eu-west"
    assert a.ttft.count == a.tpot.count == 90
    assert a.ttft_p50_ms < 200 < a.ttft_p95_ms and a.tpot_p50_ms < 30 < a.tpot_p95_ms
    assert merged[(LLAMA, "vllm-b")].requests == 10


def test_figures_are_the_quantiles_of_the_merged_histograms() -> None:
    merged = merge_samples([sample("r1", LLAMA, "vllm-a", [80.0, 120.0, 900.0], tpots_ms=[15.0, 18.0, 60.0])])
    a = merged[(LLAMA, "vllm-a")]
    assert (a.ttft_p50_ms, a.ttft_p95_ms) == (a.ttft.quantile(0.5), a.ttft.quantile(0.95))
    assert (a.tpot_p50_ms, a.tpot_p95_ms) == (a.tpot.quantile(0.5), a.tpot.quantile(0.95))


def test_without_tpot_samples_the_tpot_figures_are_zero() -> None:
    a = merge_samples([sample("r1", LLAMA, "vllm-a", [100.0] * 5)])[(LLAMA, "vllm-a")]
    assert (a.tpot.count, a.tpot_p50_ms, a.tpot_p95_ms) == (0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([sample("r1", LLAMA, "vllm-a", [100.0] * 4, output_tokens=1000)], 250.0),
        ([sample("r1", LLAMA, "vllm-a", [100.0] * 4, errors=6, output_tokens=1000)], 250.0),
        ([sample("r1", LLAMA, "vllm-a", [100.0] * 4, output_tokens=1000),
          sample("r2", LLAMA, "vllm-a", [100.0] * 6, output_tokens=200)], 120.0),
        ([sample("r1", LLAMA, "vllm-a", [], errors=3)], 0.0),
    ],
    ids=["one-router", "errors-write-no-tokens", "over-all-routers", "no-answer"],
)
def test_typical_output_tokens_is_the_mean_answer_length(samples: list, expected: float) -> None:
    assert merge_samples(samples)[(LLAMA, "vllm-a")].typical_output_tokens == pytest.approx(expected)


def test_in_flight_takes_each_routers_latest_then_sums() -> None:
    merged = merge_samples([
        sample("r1", LLAMA, "vllm-a", [100.0], in_flight=9, end_ms=1000),
        sample("r1", LLAMA, "vllm-a", [100.0], in_flight=4, end_ms=2000),
        sample("r2", LLAMA, "vllm-a", [100.0], in_flight=3, end_ms=1500),
    ])
    assert merged[(LLAMA, "vllm-a")].in_flight == 7


def test_a_sample_delivered_twice_counts_once() -> None:
    once = sample("r1", LLAMA, "vllm-a", [100.0] * 10, tpots_ms=[20.0] * 10)
    merged = merge_samples([once, once])[(LLAMA, "vllm-a")]
    assert (merged.requests, merged.tpot.count) == (10, 10)


def test_samples_older_than_the_window_are_left_out() -> None:
    merged = merge_samples([sample("r1", LLAMA, "vllm-a", [100.0] * 5, end_ms=1000),
                            sample("r2", LLAMA, "vllm-a", [100.0] * 7, end_ms=9000)], since_unix_ms=5000)
    assert merged[(LLAMA, "vllm-a")].requests == 7


@pytest.mark.parametrize("figure", ["ttft", "tpot"])
def test_a_histogram_on_other_bounds_is_rejected_not_merged(figure: str) -> None:
    foreign = sample("r9", LLAMA, "vllm-a", [100.0] * 5, tpots_ms=[20.0] * 5)
    getattr(foreign, figure).CopyFrom(telemetry_pb2.Histogram(bounds_ms=[1.0, 2.0], counts=[0, 5, 0], count=5))
    merged = merge_samples([sample("r1", LLAMA, "vllm-a", [100.0] * 10), foreign])[(LLAMA, "vllm-a")]
    assert (merged.requests, merged.rejected_samples, merged.routers) == (10, 1, frozenset({"r1"}))


def test_the_whole_answer_latency_is_not_read() -> None:
    # Display only: a router on other bounds for it does not cost its TTFT and TPOT figures.
    odd = sample("r1", LLAMA, "vllm-a", [100.0] * 5)
    odd.latency.CopyFrom(telemetry_pb2.Histogram(bounds_ms=[1.0, 2.0], counts=[0, 5, 0], count=5))
    merged = merge_samples([odd])[(LLAMA, "vllm-a")]
    assert (merged.requests, merged.rejected_samples, merged.ttft.count) == (5, 0, 5)


def test_no_samples_no_stats() -> None:
    assert dict(merge_samples([])) == {}


latencies = st.lists(st.floats(min_value=0.05, max_value=500_000.0), min_size=1, max_size=200)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(latencies, latencies), min_size=1, max_size=8),
       st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]))
def test_merged_quantiles_equal_the_quantiles_of_the_union(
    per_router: list[tuple[list[float], list[float]]], q: float
) -> None:
    samples = [sample(f"r{i}", LLAMA, "vllm-a", ttfts, tpots_ms=tpots, end_ms=1000 + i)
               for i, (ttfts, tpots) in enumerate(per_router)]
    merged = merge_samples(samples)[(LLAMA, "vllm-a")]
    for histogram, index in ((merged.ttft, 0), (merged.tpot, 1)):
        union = [v for values in per_router for v in values[index]]
        reference = Histogram.of(union)
        assert histogram.counts == reference.counts
        assert histogram.quantile(q) == pytest.approx(reference.quantile(q))
        # And within a bucket (9 %) of the exact order statistic of the raw values.
        exact = sorted(union)[max(0, min(len(union) - 1, int(q * len(union) + 0.999999) - 1))]
        assert histogram.quantile(q) == pytest.approx(exact, rel=0.1, abs=0.02)
