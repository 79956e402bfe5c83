"""The engine metrics page parser (data_plane/deployments/engine_metrics.py): captured vLLM and SGLang pages,
synthetic pages (missing names, several models, several engines), and rates between two scrapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_plane.deployments.engine_metrics import (
    EngineReading,
    Scrape,
    engine_figures,
    metrics_url,
    parse_page,
    read_page,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _read(text: str, served_model: str = "m", choice: str = "auto") -> EngineReading | None:
    page = parse_page(text)
    assert page is not None
    return read_page(page, choice, served_model)  # type: ignore[arg-type]


def test_captured_vllm_page() -> None:
    reading = _read((FIXTURES / "vllm_metrics.txt").read_text(), "Qwen/Qwen3-0.6B")
    assert reading == EngineReading(engine="vllm", requests_running=0.0, requests_waiting=0.0,
                                    kv_cache_usage=0.0,  # from the older vllm:gpu_cache_usage_perc
                                    generation_tokens_total=4874.0)
    figures = engine_figures(None, Scrape(reading, 10.0), observed_at_unix_ms=1234)
    assert (figures.requests_running, figures.requests_waiting, figures.kv_cache_usage) == (0.0, 0.0, 0.0)
    assert figures.generation_tokens_per_s is None  # a counter needs a second scrape
    assert figures.prefix_cache_hit_rate is None
    assert figures.observed_at_unix_ms == 1234


def test_captured_sglang_page() -> None:
    reading = _read((FIXTURES / "sglang_metrics.txt").read_text(), "meta-llama/Llama-3.1-8B-Instruct")
    assert reading is not None and reading.engine == "sglang"
    figures = engine_figures(None, Scrape(reading, 0.0), observed_at_unix_ms=1)
    assert figures.requests_running == 162
    assert figures.requests_waiting == 2826
    assert figures.kv_cache_usage == pytest.approx(0.28)
    assert figures.generation_tokens_per_s == pytest.approx(86.508, abs=1e-3)  # its gauge, on the first scrape
    assert figures.prefix_cache_hit_rate == pytest.approx(0.0075, abs=1e-4)


def test_captured_pages_are_read_only_with_their_own_names() -> None:
    assert _read((FIXTURES / "vllm_metrics.txt").read_text(), choice="sglang") is None
    assert _read((FIXTURES / "sglang_metrics.txt").read_text(), choice="vllm") is None


@pytest.mark.parametrize("text", [
    "",  # an empty page
    "# HELP process_cpu_seconds_total CPU\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n",
    'ollama_whatever{model="x"} 1\n',
])
def test_a_page_without_engine_names_has_no_figures(text: str) -> None:
    assert _read(text) is None


@pytest.mark.parametrize("text", ["<html><body>Not Found</body></html>", '{"detail": "Not Found"}'])
def test_text_that_is_not_prometheus_is_refused(text: str) -> None:
    assert parse_page(text) is None


SEVERAL_MODELS = """\
vllm:num_requests_running{engine="0",model_name="a"} 2
vllm:num_requests_running{engine="1",model_name="a"} 3
vllm:num_requests_running{engine="0",model_name="b"} 7
vllm:num_requests_waiting{engine="0",model_name="a"} 1
vllm:num_requests_waiting{engine="1",model_name="a"} 4
vllm:num_requests_waiting{engine="0",model_name="b"} 9
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="a"} 0.6
vllm:kv_cache_usage_perc{engine="0",model_name="b"} 0.9
vllm:gpu_cache_usage_perc{engine="0",model_name="a"} 0.99
"""


@pytest.mark.parametrize(("served_model", "running", "waiting", "kv"), [
    ("a", 5, 5, 0.4),  # its own series: counts add up over engines, fractions average, the newer KV name wins
    ("b", 7, 9, 0.9),
    ("served-under-another-name", 12, 14, (0.2 + 0.6 + 0.9) / 3),  # no series of that name: all of them
])
def test_series_of_the_served_model_add_up(served_model: str, running: float, waiting: float, kv: float) -> None:
    reading = _read(SEVERAL_MODELS, served_model)
    assert reading is not None
    assert (reading.requests_running, reading.requests_waiting) == (running, waiting)
    assert reading.kv_cache_usage == pytest.approx(kv)


def test_unlabelled_series_and_missing_figures() -> None:
    reading = _read("vllm:num_requests_waiting 3\nvllm:kv_cache_usage_perc NaN\n")
    assert reading == EngineReading(engine="vllm", requests_running=0.0, requests_waiting=3.0)


def test_out_of_range_values_are_kept_in_range() -> None:
    reading = _read("sglang:num_running_reqs -1\nsglang:token_usage 1.7\n")
    assert reading is not None
    assert reading.requests_running == 0.0 and reading.kv_cache_usage == 1.0
    engine_figures(None, Scrape(reading, 0.0), 0)  # valid figures: no InvalidEngineFigures


def _vllm(tokens: float, hits: float, queries: float) -> EngineReading:
    return EngineReading(engine="vllm", requests_running=1, requests_waiting=0, generation_tokens_total=tokens,
                         prefix_cache_hits_total=hits, prefix_cache_queries_total=queries)


@pytest.mark.parametrize(("before", "after", "elapsed_s", "tokens_per_s", "hit_rate"), [
    (_vllm(1000, 100, 400), _vllm(1500, 250, 600), 0.5, 1000.0, 0.75),
    (_vllm(1000, 100, 400), _vllm(1000, 100, 400), 0.5, 0.0, None),  # idle: no tokens, no query to rate
    (_vllm(1000, 100, 400), _vllm(20, 5, 10), 0.5, None, None),  # the engine restarted: no rate this time
    (_vllm(1000, 100, 400), _vllm(1500, 250, 600), 0.0, None, 0.75),  # the same instant: no tokens/s
])
def test_rates_from_counter_deltas(before: EngineReading, after: EngineReading, elapsed_s: float,
                                   tokens_per_s: float | None, hit_rate: float | None) -> None:
    figures = engine_figures(Scrape(before, 10.0), Scrape(after, 10.0 + elapsed_s), 0)
    assert figures.generation_tokens_per_s == (pytest.approx(tokens_per_s) if tokens_per_s is not None else None)
    assert figures.prefix_cache_hit_rate == (pytest.approx(hit_rate) if hit_rate is not None else None)


def test_counter_rate_preferred_over_a_gauge() -> None:
    before = EngineReading(engine="sglang", requests_running=1, requests_waiting=0, generation_tokens_total=100,
                           generation_tokens_per_s=5.0)
    after = EngineReading(engine="sglang", requests_running=1, requests_waiting=0, generation_tokens_total=300,
                          generation_tokens_per_s=5.0)
    assert engine_figures(Scrape(before, 0.0), Scrape(after, 1.0), 0).generation_tokens_per_s == 200.0


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/metrics"),
    ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/metrics"),
    ("https://host/openai/v1", "https://host/openai/metrics"),
    ("http://127.0.0.1:8000", None),
])
def test_metrics_url(url: str, expected: str | None) -> None:
    assert metrics_url(url, "/metrics") == expected
