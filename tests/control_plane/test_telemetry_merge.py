"""Merging telemetry from many routers: counters add, histograms merge exactly, gauges take the latest."""

from __future__ import annotations

import pytest
from compute_fixtures import LLAMA, sample
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.telemetry_merge import merge_samples
from meridian_common.histogram import Histogram
from meridian_proto import telemetry_pb2


def test_counters_add_and_error_rate_is_over_all_routers() -> None:
    merged = merge_samples([
        sample("r1", LLAMA, "vllm-a", [100.0] * 30, errors=3),
        sample("r2", LLAMA, "vllm-a", [200.0] * 70, errors=7, region="us-east"),
        sample("r1", LLAMA, "vllm-b", [50.0] * 10),
    ])
    a = merged[(LLAMA, "vllm-a")]
    assert (a.requests, a.errors, a.error_rate) == (100, 10, pytest.approx(0.1))
    assert a.routers == frozenset({"r1", "r2"}) and a.deployment_region == "eu-west"
    assert a.latency.count == 100 and a.p50_ms < 200 < a.p95_ms <= a.p99_ms
    assert merged[(LLAMA, "vllm-b")].requests == 10


def test_in_flight_takes_each_routers_latest_then_sums() -> None:
    merged = merge_samples([
        sample("r1", LLAMA, "vllm-a", [100.0], in_flight=9, end_ms=1000),
        sample("r1", LLAMA, "vllm-a", [100.0], in_flight=4, end_ms=2000),
        sample("r2", LLAMA, "vllm-a", [100.0], in_flight=3, end_ms=1500),
    ])
    assert merged[(LLAMA, "vllm-a")].in_flight == 7


def test_a_sample_delivered_twice_counts_once() -> None:
    once = sample("r1", LLAMA, "vllm-a", [100.0] * 10)
    assert merge_samples([once, once])[(LLAMA, "vllm-a")].requests == 10


def test_samples_older_than_the_window_are_left_out() -> None:
    merged = merge_samples([sample("r1", LLAMA, "vllm-a", [100.0] * 5, end_ms=1000),
                            sample("r2", LLAMA, "vllm-a", [100.0] * 7, end_ms=9000)], since_unix_ms=5000)
    assert merged[(LLAMA, "vllm-a")].requests == 7


def test_a_histogram_on_other_bounds_is_rejected_not_merged() -> None:
    foreign = sample("r9", LLAMA, "vllm-a", [100.0] * 5)
    foreign.latency.CopyFrom(telemetry_pb2.Histogram(bounds_ms=[1.0, 2.0], counts=[0, 5, 0], count=5))
    merged = merge_samples([sample("r1", LLAMA, "vllm-a", [100.0] * 10), foreign])[(LLAMA, "vllm-a")]
    assert (merged.requests, merged.rejected_samples, merged.routers) == (10, 1, frozenset({"r1"}))


def test_no_samples_no_stats() -> None:
    assert dict(merge_samples([])) == {}


latencies = st.lists(st.floats(min_value=0.05, max_value=500_000.0), min_size=1, max_size=200)


@settings(max_examples=100, deadline=None)
@given(st.lists(latencies, min_size=1, max_size=8), st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]))
def test_merged_quantiles_equal_the_quantiles_of_the_union(per_router: list[list[float]], q: float) -> None:
    samples = [sample(f"r{i}", LLAMA, "vllm-a", values, end_ms=1000 + i)
               for i, values in enumerate(per_router)]
    merged = merge_samples(samples)[(LLAMA, "vllm-a")]
    union = [v for values in per_router for v in values]
    reference = Histogram.of(union)
    assert merged.latency.counts == reference.counts
    assert merged.latency.quantile(q) == pytest.approx(reference.quantile(q))
    # And within a bucket (9 %) of the exact order statistic of the raw values.
    exact = sorted(union)[max(0, min(len(union) - 1, int(q * len(union) + 0.999999) - 1))]
    assert merged.latency.quantile(q) == pytest.approx(exact, rel=0.1, abs=0.02)
