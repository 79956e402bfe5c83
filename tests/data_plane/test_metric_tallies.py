"""Tallies export what prometheus-client's own counters and histograms would: the same sample names, labels,
cumulative buckets and sums, in the same exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from data_plane.metric_tallies import CounterTally, GaugeReading, HistogramTally, TallyCollector

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = (0.0005, 0.001, 0.002, 0.05, 0.1, 0.7, 3.0, 0.01)


def _samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample but prometheus-client's `_created` timestamps, which tallies do not keep."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items())), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")}


def test_tallies_expose_what_prometheus_client_metrics_would() -> None:
    reference, tallied = CollectorRegistry(), CollectorRegistry()
    counter = Counter("requests", "Requests.", ("model", "status"), registry=reference)
    histogram = Histogram("latency_seconds", "Latency.", ("model",), buckets=BUCKETS, registry=reference)
    tallies = TallyCollector()
    counter_tally = CounterTally("requests", "Requests.", ("model", "status"))
    histogram_tally = HistogramTally("latency_seconds", "Latency.", ("model",), BUCKETS)
    tallies.add(counter_tally)
    tallies.add(histogram_tally)
    tallied.register(tallies)
    for index, value in enumerate(VALUES):
        model = "a" if index % 3 else "b"
        counter.labels(model, "200").inc(2)
        counter_tally.inc((model, "200"), 2)
        histogram.labels(model).observe(value)
        histogram_tally.observe((model,), value)
    assert _samples(tallied) == _samples(reference)


def test_a_gauge_reading_is_read_at_each_scrape() -> None:
    in_flight = {"a": 1.0}
    registry = CollectorRegistry()
    tallies = TallyCollector()
    reading = GaugeReading("in_flight", "In flight.", ("deployment",))
    tallies.add(reading)
    registry.register(tallies)
    assert registry.get_sample_value("in_flight", {"deployment": "a"}) is None  # nothing reads it yet
    reading.read_from(lambda: [((name,), value) for name, value in in_flight.items()])
    assert registry.get_sample_value("in_flight", {"deployment": "a"}) == 1.0
    in_flight.update(a=3.0, b=1.0)
    assert registry.get_sample_value("in_flight", {"deployment": "a"}) == 3.0
    assert registry.get_sample_value("in_flight", {"deployment": "b"}) == 1.0


def test_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        HistogramTally("h", "H.", (), (1.0, 0.5))
