"""`meridian bench prefix-affinity`: its figures from the simulators' counters and the router's `/routing`, and a
small run end to end in which affinity raises the prefix-cache hit rate."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.prefix_affinity import (
    PrefixAffinitySettings,
    _Answer,
    engine_counters,
    main_prefix_affinity,
    run_figures,
    size_model_errors,
)
from meridian_common.workload import REALISTIC

METRICS = """# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{model_name="m"} 1000.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{model_name="m"} 640.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4.0
vllm:time_to_first_token_seconds_count{model_name="m"} 4.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.6
"""


def test_engine_counters_read_the_vllm_names() -> None:
    assert engine_counters(METRICS) == {"hits": 640.0, "queries": 1000.0, "ttft_sum_s": 0.6, "ttft_count": 4.0}
    assert engine_counters("") == {"hits": 0.0, "queries": 0.0, "ttft_sum_s": 0.0, "ttft_count": 0.0}


def _deployment(ttft: tuple[float | None, float | None, int], tpot: tuple[float | None, float | None, int]
                ) -> dict[str, Any]:
    return {"size_model": {name: {"mape": mape, "size_blind_mape": blind, "answers": answers}
                           for name, (mape, blind, answers) in (("ttft", ttft), ("tpot", tpot))}}


def test_prediction_errors_are_weighted_by_answers() -> None:
    routing = {"models": {"m": {"deployments": [_deployment((0.1, 0.5, 30), (0.2, 0.2, 10)),
                                                _deployment((0.4, 0.8, 10), (None, None, 0)),
                                                _deployment((None, None, 0), (0.6, 0.4, 30))]}}}
    assert size_model_errors(routing) == {"ttft_mape": 0.175, "ttft_mape_size_blind": 0.575,
                                          "tpot_mape": 0.5, "tpot_mape_size_blind": 0.35}
    assert size_model_errors({"models": {}})["ttft_mape"] is None


def test_run_figures_take_ttft_from_completed_streams_only() -> None:
    answers = [_Answer(True, True, 100.0, "sim-1"), _Answer(True, True, 300.0, "sim-2"),
               _Answer(True, False, None, "sim-1"), _Answer(False, True, None, None)]
    counters = [engine_counters(METRICS), {"hits": 0.0, "queries": 1000.0, "ttft_sum_s": 0.2, "ttft_count": 1.0}]
    routing = {"models": {"m": {"deployments": [_deployment((0.1, 0.5, 3), (0.2, 0.2, 3))]}}}
    figures = run_figures(answers, counters, routing, 1.5)
    assert (figures["hit_rate"], figures["mean_ttft_ms"], figures["streams"], figures["errors"]) == (0.32, 200.0, 2, 1)
    assert figures["engine_mean_ttft_ms"] == 160.0
    assert figures["backend_share"] == {"sim-1": 0.667, "sim-2": 0.333}
    assert figures["ttft_mape"] == 0.1


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_affinity_raises_the_hit_rate_in_a_small_run() -> None:
    # Six prefixes of 670-1330 tokens; each simulator holds about two of them, the three together all.
    workload = REALISTIC.model_copy(update={"answer_tokens_median": 16, "answer_tokens_sigma": 0.2,
                                            "prompt_tokens_median": 40, "prompt_tokens_sigma": 0.3})
    settings = PrefixAffinitySettings(requests=90, concurrency=3, shared_prefixes=6, shared_prefix_tokens=1000,
                                      prefix_cache_blocks=40, workload=workload, run_timeout_s=60)
    lines: list[str] = []
    figures = main_prefix_affinity(settings, lines.append)
    for key in ("hit_rate_with", "hit_rate_without", "mean_ttft_ms_with", "mean_ttft_ms_without", "ttft_ratio",
                "ttft_mape", "ttft_mape_size_blind", "tpot_mape", "tpot_mape_size_blind", "workload"):
        assert key in figures
    assert figures["runs"]["with"]["errors"] == figures["runs"]["without"]["errors"] == 0
    assert figures["hit_rate_with"] > figures["hit_rate_without"]
    assert "6 shared prefixes" in figures["workload"]
    assert len(lines) == 4  # a line before and after each run
