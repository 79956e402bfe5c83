"""The per-deployment telemetry accumulators: what one drain reports, and that drains lose nothing."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_plane.telemetry.accumulator import DeploymentKey, TelemetryAccumulators
from meridian_common.engine_figures import EngineFigures
from meridian_common.histogram import Histogram
from meridian_proto import telemetry_pb2

A: DeploymentKey = ("chat", "a")
B: DeploymentKey = ("chat", "b")
C: DeploymentKey = ("embed", "c")


def drain(accumulators: TelemetryAccumulators, now_unix_ms: int, *,
          in_flight: Mapping[DeploymentKey, int] | None = None,
          queue_depth: Mapping[str, int] | None = None) -> list[telemetry_pb2.TelemetrySample]:
    return accumulators.drain(
        router_id="r1", region="us-east", table_version=7, now_unix_ms=now_unix_ms,
        in_flight=in_flight or {}, breaker_states={A: "closed", B: "open"},
        deployment_regions={A: "us-east", B: "eu-west"}, queue_depth=queue_depth,
    )


def record(accumulators: TelemetryAccumulators, key: DeploymentKey, *, ok: bool = True, latency_ms: float = 100.0,
           ttft_ms: float | None = None, input_tokens: int = 10, output_tokens: int = 20) -> None:
    accumulators.record(*key, ok=ok, latency_ms=latency_ms, ttft_ms=ttft_ms, input_tokens=input_tokens,
                        output_tokens=output_tokens)


def test_a_drain_reports_what_happened_and_resets() -> None:
    accumulators = TelemetryAccumulators(started_unix_ms=1_000)
    record(accumulators, A, latency_ms=50, ttft_ms=10)
    record(accumulators, A, latency_ms=150, ttft_ms=None)
    record(accumulators, A, ok=False, latency_ms=1, input_tokens=99, output_tokens=99)

    (sample,) = drain(accumulators, 1_500)

    assert (sample.router_id, sample.region, sample.model, sample.deployment) == ("r1", "us-east", "chat", "a")
    assert (sample.deployment_region, sample.breaker_state, sample.table_version) == ("us-east", "closed", 7)
    assert (sample.window_start_unix_ms, sample.window_end_unix_ms) == (1_000, 1_500)
    assert (sample.requests, sample.errors) == (3, 1)
    assert (sample.input_tokens, sample.output_tokens) == (20, 40)
    assert Histogram.from_proto(sample.latency).count == 2  # the failure is not a latency
    assert Histogram.from_proto(sample.latency).sum_ms == pytest.approx(200.0)
    assert Histogram.from_proto(sample.ttft).count == 1
    assert sample.dropped_samples == 0

    assert drain(accumulators, 2_000) == []


def test_only_deployments_used_since_the_last_drain_are_reported() -> None:
    accumulators = TelemetryAccumulators(started_unix_ms=0)
    record(accumulators, A)
    samples = drain(accumulators, 500, in_flight={B: 2, C: 0})
    assert [(s.model, s.deployment) for s in samples] == [A, B]
    in_flight_only = samples[1]
    assert (in_flight_only.requests, in_flight_only.in_flight, in_flight_only.breaker_state) == (0, 2, "open")
    assert not in_flight_only.HasField("latency") and not in_flight_only.HasField("ttft")

    samples = drain(accumulators, 1_000, in_flight={B: 1})
    assert [(s.model, s.deployment) for s in samples] == [B]
    assert samples[0].window_start_unix_ms == 500

    # B's requests were abandoned: one more sample says in_flight fell to 0, then B goes quiet
    samples = drain(accumulators, 1_500, in_flight={B: 0})
    assert [(s.deployment, s.requests, s.in_flight) for s in samples] == [("b", 0, 0)]
    assert drain(accumulators, 2_000, in_flight={}) == []


def test_consecutive_windows_touch_and_never_run_backwards() -> None:
    accumulators = TelemetryAccumulators(started_unix_ms=1_000)
    record(accumulators, A)
    first = drain(accumulators, 1_500)[0]
    record(accumulators, A)
    stepped_back = drain(accumulators, 1_200)[0]  # the wall clock was stepped back
    assert first.window_end_unix_ms == stepped_back.window_start_unix_ms == 1_500
    assert stepped_back.window_end_unix_ms >= stepped_back.window_start_unix_ms


def test_queue_depth_is_per_model_and_unknown_gauges_default_to_empty() -> None:
    accumulators = TelemetryAccumulators(started_unix_ms=0)
    record(accumulators, A)
    record(accumulators, C)
    by_key = {(s.model, s.deployment): s for s in drain(accumulators, 10, queue_depth={"chat": 4})}
    assert by_key[A].queue_depth == 4
    assert (by_key[C].queue_depth, by_key[C].breaker_state, by_key[C].deployment_region) == (0, "", "")


def test_drained_histograms_merge_with_the_shared_bounds() -> None:
    accumulators = TelemetryAccumulators(started_unix_ms=0)
    values = [0.5, 3.0, 40.0, 40.0, 900.0, 12_000.0]
    for value in values:
        record(accumulators, A, latency_ms=value)
    (sample,) = drain(accumulators, 10)
    latency = Histogram.from_proto(sample.latency)
    assert latency.counts == Histogram.of(values).counts
    assert sum(sample.latency.counts) == sample.latency.count == len(values)


records = st.lists(
    st.tuples(st.sampled_from([A, B, C]), st.booleans(), st.floats(0.0, 1e6), st.one_of(st.none(), st.floats(0, 1e5)),
              st.booleans()),  # the last flag: drain after this record
    max_size=200,
)


@given(records)
def test_every_record_is_reported_exactly_once_across_drains(
    events: list[tuple[DeploymentKey, bool, float, float | None, bool]],
) -> None:
    accumulators = TelemetryAccumulators(started_unix_ms=0)
    samples: list[telemetry_pb2.TelemetrySample] = []
    now = 0
    for key, ok, latency_ms, ttft_ms, drain_now in events:
        record(accumulators, key, ok=ok, latency_ms=latency_ms, ttft_ms=ttft_ms, input_tokens=1, output_tokens=2)
        if drain_now:
            now += 500
            samples += drain(accumulators, now)
    samples += drain(accumulators, now + 500)

    assert sum(s.requests for s in samples) == len(events)
    successes = sum(1 for _, ok, *_ in events if ok)
    assert sum(s.requests - s.errors for s in samples) == successes
    assert sum(s.latency.count for s in samples) == successes
    assert sum(sum(s.latency.counts) for s in samples) == successes
    assert sum(s.ttft.count for s in samples) == sum(1 for _, ok, _, t, _ in events if ok and t is not None)
    assert sum(s.output_tokens for s in samples) == 2 * successes
    assert all(s.requests > 0 for s in samples)
    for key in (A, B, C):
        windows = [(s.window_start_unix_ms, s.window_end_unix_ms) for s in samples if (s.model, s.deployment) == key]
        assert len(set(windows)) == len(windows), "a deployment reported twice for one window"


def test_fresh_engine_figures_ride_on_a_sample_even_without_traffic() -> None:
    accumulators = TelemetryAccumulators(started_unix_ms=0)
    engine = EngineFigures(requests_running=2, requests_waiting=5, kv_cache_usage=0.5, observed_at_unix_ms=900)
    samples = accumulators.drain(router_id="r", region="eu", table_version=1, now_unix_ms=1000, in_flight={},
                                 breaker_states={}, deployment_regions={}, architectures={("m", "d"): "moe"},
                                 engines={("m", "d"): engine})
    assert [(s.model, s.deployment, s.requests, s.architecture) for s in samples] == [("m", "d", 0, "moe")]
    assert EngineFigures.from_proto(samples[0].engine) == engine
