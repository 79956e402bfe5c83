"""Prometheus metrics named as vLLM names them, read from the live state at scrape time so that serving a
request updates nothing but plain numbers."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from simulator.engine_stats import BucketCounts
from simulator.live_state import SimulatorState

_LABELS = ["model_name"]


def _gauge(name: str, documentation: str, model: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=_LABELS)
    gauge.add_metric([model], value)
    return gauge


def _counter(name: str, documentation: str, model: str, value: float) -> CounterMetricFamily:
    # prometheus_client appends `_total` to a counter's samples: `vllm:prompt_tokens` is exposed as
    # `vllm:prompt_tokens_total`, the name vLLM's exposition has.
    counter = CounterMetricFamily(name, documentation, labels=_LABELS)
    counter.add_metric([model], value)
    return counter


def _histogram(name: str, documentation: str, model: str, counts: BucketCounts) -> HistogramMetricFamily:
    histogram = HistogramMetricFamily(name, documentation, labels=_LABELS)
    histogram.add_metric([model], counts.cumulative(), counts.sum)
    return histogram


class SimulatorCollector(Collector):
    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return []  # names are only known at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        state = self._state
        model = state.settings.model
        admission = state.admission
        engine = state.engine
        kv_usage = state.kv_cache_usage()
        yield _gauge("vllm:num_requests_running", "Requests being generated now.", model, admission.running)
        yield _gauge("vllm:num_requests_waiting", "Requests queued for a free slot or KV cache space.", model,
                     admission.waiting)
        yield _gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", model, kv_usage)
        yield _gauge("vllm:gpu_cache_usage_perc", "KV-cache usage (vLLM's older name). 1 means 100 percent usage.",
                     model, kv_usage)
        yield _gauge("sim_capacity", "Concurrent requests the simulator runs.", model, admission.capacity)
        yield _gauge("sim_peak_requests_running", "Most requests ever running at once.", model,
                     admission.peak_running)
        yield _counter("vllm:request_success", "Requests answered completely.", model, state.served)
        yield _counter("vllm:prompt_tokens", "Number of prefill tokens processed.", model, engine.prompt_tokens)
        yield _counter("vllm:generation_tokens", "Number of generation tokens processed.", model,
                       engine.generation_tokens)
        yield _counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                       model, engine.prefix_cache_queries)
        yield _counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", model,
                       engine.prefix_cache_hits)
        yield _histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", model,
                         engine.ttft_s)
        yield _histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", model,
                         engine.itl_s)
        yield _histogram("vllm:time_per_output_token_seconds",
                         "Histogram of time per output token in seconds (vLLM's older name of the inter-token "
                         "latency).", model, engine.itl_s)
        yield _histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", model,
                         engine.e2e_s)
        requests = CounterMetricFamily("sim_requests", "Requests by outcome.", labels=["model_name", "outcome"])
        outcomes = (("served", state.served), ("error", state.errors), ("rejected", state.rejected),
                    ("throttled", state.throttled), ("cancelled", state.cancelled), ("cut", state.cut))
        for outcome, count in outcomes:
            requests.add_metric([model, outcome], count)
        yield requests


def build_registry(state: SimulatorState) -> CollectorRegistry:
    """A registry of this app's own, so several simulators can live in one process (as tests do)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SimulatorCollector(state))
    return registry
