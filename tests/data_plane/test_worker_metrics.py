"""Merging the workers' registries into one exposition (pure) and the CLI's worker count."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from data_plane.api.worker_metrics import MergedFamilies, families_json, merge_families
from data_plane.worker import WorkerIdentity
from meridian_cli.router import workers_count


def _registry(requests: float, breaker: float | None) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("meridian_requests", "Requests.", ("model",), registry=registry).labels("m").inc(requests)
    state = Gauge("meridian_breaker_state", "Breaker.", ("deployment",), registry=registry)
    if breaker is not None:
        state.labels("d").set(breaker)
    return registry


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples
            if not s.name.endswith("_created")}


def test_each_family_once_with_every_workers_samples_labelled() -> None:
    merged = merge_families({0: families_json(_registry(3, 2)), 1: families_json(_registry(5, None))})
    text = generate_latest(MergedFamilies(merged))  # type: ignore[arg-type]
    assert text.count(b"# TYPE meridian_requests_total counter") == 1
    samples = _samples(text)
    assert samples[("meridian_requests_total", (("model", "m"), ("worker", "0")))] == 3
    assert samples[("meridian_requests_total", (("model", "m"), ("worker", "1")))] == 5
    # A series one worker has and the other removed stays that worker's alone.
    assert samples[("meridian_breaker_state", (("deployment", "d"), ("worker", "0")))] == 2
    assert ("meridian_breaker_state", (("deployment", "d"), ("worker", "1"))) not in samples
    assert samples[("meridian_worker_scrape_up", (("worker", "0"),))] == 1
    assert samples[("meridian_worker_scrape_up", (("worker", "1"),))] == 1


def test_a_worker_that_did_not_answer_is_down_and_absent() -> None:
    merged = merge_families({0: families_json(_registry(1, 0)), 2: None})
    samples = _samples(generate_latest(MergedFamilies(merged)))  # type: ignore[arg-type]
    assert samples[("meridian_worker_scrape_up", (("worker", "2"),))] == 0
    assert not any(dict(labels).get("worker") == "2" for name, labels in samples if name != "meridian_worker_scrape_up")


def test_worker_identity() -> None:
    identity = WorkerIdentity(1, 3, Path("/run/pool"))
    assert identity.router_id("us-east-1") == "us-east-1-w1"
    assert identity.siblings() == [0, 2]
    assert identity.metrics_socket(2) == Path("/run/pool/worker-2.metrics.sock")
    with pytest.raises(ValueError, match="not in 0..2"):
        WorkerIdentity(3, 3, Path("/run/pool"))


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("4", 4), ("256", 256)])
def test_workers_count(text: str, expected: int) -> None:
    assert workers_count(text) == expected


def test_workers_auto_is_the_usable_cpus() -> None:
    assert workers_count("auto") >= 1


@pytest.mark.parametrize("text", ["0", "-1", "257", "many", ""])
def test_workers_count_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        workers_count(text)
