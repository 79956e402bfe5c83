"""Prometheus metrics named as vLLM names them, read from the live state at scrape time so that serving a
request updates nothing but plain integers."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from simulator.live_state import SimulatorState


class SimulatorCollector(Collector):
    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return []  # names are only known at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        state = self._state
        model = state.settings.model
        running = GaugeMetricFamily("vllm:num_requests_running", "Requests being generated now.",
                                    labels=["model_name"])
        running.add_metric([model], state.admission.running)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests queued for a free slot.",
                                    labels=["model_name"])
        waiting.add_metric([model], state.admission.waiting)
        capacity = GaugeMetricFamily("sim_capacity", "Concurrent requests the simulator runs.",
                                     labels=["model_name"])
        capacity.add_metric([model], state.admission.capacity)
        peak = GaugeMetricFamily("sim_peak_requests_running", "Most requests ever running at once.",
                                 labels=["model_name"])
        peak.add_metric([model], state.admission.peak_running)
        success = CounterMetricFamily("vllm:request_success", "Requests answered completely.",
                                      labels=["model_name"])
        success.add_metric([model], state.served)
        requests = CounterMetricFamily("sim_requests", "Requests by outcome.",
                                       labels=["model_name", "outcome"])
        outcomes = (("served", state.served), ("error", state.errors), ("rejected", state.rejected),
                    ("throttled", state.throttled), ("cancelled", state.cancelled))
        for outcome, count in outcomes:
            requests.add_metric([model, outcome], count)
        yield from (running, waiting, capacity, peak, success, requests)


def build_registry(state: SimulatorState) -> CollectorRegistry:
    """A registry of this app's own, so several simulators can live in one process (as tests do)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SimulatorCollector(state))
    return registry
