"""Totals of a few samples of a Prometheus text page (a simulator's `/metrics`), for the benchmarks."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


def sample_totals(metrics_text: str, wanted: Mapping[str, str]) -> dict[str, float]:
    """For each sample name in `wanted`, the sum of its values over every series, under the name `wanted` gives
    it (0 when the page has none)."""
    totals = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in wanted:
                totals[wanted[sample.name]] += sample.value
    return totals
