"""The engine figures: bucket counts on vLLM's bounds, the prefix-cache accounting of the live state, the KV
usage it reports per architecture, and every vLLM name on the metrics page."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from simulator.engine_stats import E2E_BOUNDS_S, ITL_BOUNDS_S, TTFT_BOUNDS_S, BucketCounts
from simulator.live_state import SimulatorState
from simulator.metrics import build_registry
from simulator.prefix_cache import BLOCK_CHARS, block_hashes
from simulator.profiles import Profile
from simulator.settings import SimulatorSettings

VLLM_SAMPLES = {
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc", "vllm:request_success_total", "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
    *(f"{name}_{suffix}" for name in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                                      "vllm:time_per_output_token_seconds", "vllm:e2e_request_latency_seconds")
      for suffix in ("bucket", "count", "sum")),
}


@pytest.mark.parametrize(
    ("values", "cumulative_at"),
    [
        ([], {"0.001": 0, "+Inf": 0}),
        ([0.001], {"0.001": 1, "0.005": 1, "+Inf": 1}),  # a bound holds the values equal to it
        ([0.0011, 0.03, 5000.0], {"0.001": 0, "0.005": 1, "0.04": 2, "2560.0": 2, "+Inf": 3}),
    ],
)
def test_bucket_counts_are_cumulative_as_prometheus_exposes_them(values: list[float],
                                                                 cumulative_at: dict[str, int]) -> None:
    counts = BucketCounts(TTFT_BOUNDS_S)
    for value in values:
        counts.observe(value)
    buckets = dict(counts.cumulative())
    assert len(buckets) == len(TTFT_BOUNDS_S) + 1
    for le, expected in cumulative_at.items():
        assert buckets[le] == expected
    assert counts.count == len(values) and counts.sum == pytest.approx(sum(values))


def test_a_block_of_tokens_is_observed_at_once() -> None:
    counts = BucketCounts(ITL_BOUNDS_S)
    counts.observe(0.02, 16)
    assert counts.count == 16 and counts.sum == pytest.approx(0.32) and dict(counts.cumulative())["0.025"] == 16


def test_bounds_are_vllms_and_must_rise() -> None:
    assert (TTFT_BOUNDS_S[0], TTFT_BOUNDS_S[-1], ITL_BOUNDS_S[0], E2E_BOUNDS_S[-1]) == (0.001, 2560.0, 0.01, 7680.0)
    with pytest.raises(ValueError, match="rise"):
        BucketCounts((1.0, 0.5))


def test_a_repeated_prompt_counts_queries_and_hits_in_tokens() -> None:
    state = SimulatorState(SimulatorSettings(), started_unix=0)
    hashes = block_hashes("a" * (4 * BLOCK_CHARS))
    assert state.admit_prompt(300, hashes) == 0
    assert state.admit_prompt(300, hashes) == 256
    assert state.admit_prompt(200, hashes) == 199  # never the whole prompt
    engine = state.engine
    assert (engine.prompt_tokens, engine.prefix_cache_queries, engine.prefix_cache_hits) == (800, 800, 455)
    state.apply(SimulatorSettings(prefix_cache_blocks=0))
    assert state.admit_prompt(300, hashes) == 0
    assert (engine.prompt_tokens, engine.prefix_cache_queries) == (1100, 800)  # a disabled cache is not queried


@pytest.mark.parametrize(
    ("profile", "reserved", "running", "usage"),
    [
        (Profile.DENSE, 250, 1, 0.25),
        (Profile.HYBRID, 2000, 1, 1.0),  # admitted alone beyond the budget: full, not fuller
        (Profile.LINEAR_ATTENTION, 0, 3, 0.75),  # a fixed state per sequence: slots in use
    ],
)
def test_kv_usage_is_a_fraction_per_architecture(profile: Profile, reserved: int, running: int,
                                                 usage: float) -> None:
    state = SimulatorState(SimulatorSettings(profile=profile, capacity=4, kv_cache_tokens=1000), started_unix=0)
    for index in range(running):
        assert state.admission.try_acquire(reserved if index == 0 else 0)
    assert state.kv_cache_usage() == pytest.approx(usage)
    assert state.view()["kv_cache_usage"] == pytest.approx(usage)


def test_the_metrics_page_has_every_vllm_name_with_the_model_label() -> None:
    state = SimulatorState(SimulatorSettings(model="m"), started_unix=0)
    state.engine.ttft_s.observe(0.03)
    state.engine.prompt_tokens = 12
    text = generate_latest(build_registry(state)).decode()
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert VLLM_SAMPLES <= samples.keys(), VLLM_SAMPLES - samples.keys()
    assert all(s.labels.get("model_name") == "m" for s in samples.values())
    assert samples["vllm:prompt_tokens_total"].value == 12
    assert samples["vllm:time_to_first_token_seconds_count"].value == 1
