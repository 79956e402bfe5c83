"""What a router saw of each deployment since its last telemetry flush, turned into TelemetrySamples.

Pure: no clock, no I/O. The request path calls `record` (a dict lookup and a bisect); the publisher's
collect callback calls `drain` every flush interval with the gauges it read from the router state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meridian_common.engine_figures import EngineFigures
from meridian_common.histogram import Histogram
from meridian_common.telemetry_counts import TelemetryCounts
from meridian_proto import telemetry_pb2

DeploymentKey = tuple[str, str]
"""(logical model, deployment name)"""


@dataclass(slots=True)
class DeploymentAccumulator:
    """What one deployment answered since the last drain; mutable, owned by one TelemetryAccumulators. The
    whole-answer latency goes to the sample for dashboards only: nothing decides on it."""

    counts: TelemetryCounts = field(default_factory=TelemetryCounts)
    latency: Histogram = field(default_factory=Histogram)

    def record(self, *, ok: bool, latency_ms: float, ttft_ms: float | None, tpot_ms: float | None,
               input_tokens: int, output_tokens: int) -> None:
        self.counts.record_answer(ok=ok, ttft_ms=ttft_ms, tpot_ms=tpot_ms, input_tokens=input_tokens,
                                  output_tokens=output_tokens)
        if ok:
            self.latency.record(latency_ms)


class TelemetryAccumulators:
    """Per-(model, deployment) accumulators of one router; `drain` turns them into samples and resets.

    Each drain covers [previous drain, now]: the first one starts at `started_unix_ms`. Window bounds
    identify a sample downstream (a retried publish counts once), so drains must use increasing `now`.
    """

    __slots__ = ("_by_key", "_window_start_unix_ms", "_reported_in_flight")

    def __init__(self, *, started_unix_ms: int) -> None:
        self._by_key: dict[DeploymentKey, DeploymentAccumulator] = {}
        self._window_start_unix_ms = started_unix_ms
        self._reported_in_flight: set[DeploymentKey] = set()

    def record(self, model: str, deployment: str, *, ok: bool, latency_ms: float, ttft_ms: float | None = None,
               tpot_ms: float | None = None, input_tokens: int = 0, output_tokens: int = 0) -> None:
        key = (model, deployment)
        accumulator = self._by_key.get(key)
        if accumulator is None:
            accumulator = self._by_key[key] = DeploymentAccumulator()
        accumulator.record(ok=ok, latency_ms=latency_ms, ttft_ms=ttft_ms, tpot_ms=tpot_ms,
                           input_tokens=input_tokens, output_tokens=output_tokens)

    @property
    def window_start_unix_ms(self) -> int:
        return self._window_start_unix_ms

    def drain(
        self,
        *,
        router_id: str,
        region: str,
        table_version: int,
        now_unix_ms: int,
        in_flight: Mapping[DeploymentKey, int],
        breaker_states: Mapping[DeploymentKey, str],
        deployment_regions: Mapping[DeploymentKey, str],
        queue_depth: Mapping[str, int] | None = None,
        architectures: Mapping[DeploymentKey, str] | None = None,
        engines: Mapping[DeploymentKey, EngineFigures] | None = None,
    ) -> list[telemetry_pb2.TelemetrySample]:
        """One sample per deployment used since the last drain (a finished request, or one in flight now) or
        with fresh engine figures in `engines` (so that the control plane keeps seeing an idle engine's load),
        sorted by key; the accumulators start again from zero. A deployment whose last sample showed
        requests in flight gets one more sample, so that the control plane sees the gauge fall to zero
        even when those requests were abandoned rather than finished. `queue_depth` is keyed by logical model
        (the queue is per model) and is reported on each of that model's samples."""
        by_key, self._by_key = self._by_key, {}
        window_start = self._window_start_unix_ms
        # A clock stepped backwards must not produce a window that ends before it starts.
        window_end = max(now_unix_ms, window_start)
        self._window_start_unix_ms = window_end
        used = {key for key, acc in by_key.items() if acc.counts.requests > 0}
        now_in_flight = {key for key, count in in_flight.items() if count > 0}
        used.update(now_in_flight)
        used.update(self._reported_in_flight)
        self._reported_in_flight = now_in_flight
        engines = engines or {}
        used.update(engines)
        queues = queue_depth or {}
        kinds = architectures or {}
        samples = []
        for key in sorted(used):
            model, deployment = key
            accumulator = by_key.get(key)
            sample = telemetry_pb2.TelemetrySample(
                router_id=router_id,
                region=region,
                model=model,
                deployment=deployment,
                deployment_region=deployment_regions.get(key, ""),
                window_start_unix_ms=window_start,
                window_end_unix_ms=window_end,
                in_flight=max(0, in_flight.get(key, 0)),
                breaker_state=breaker_states.get(key, ""),
                table_version=max(0, table_version),
                queue_depth=max(0, queues.get(model, 0)),
                architecture=kinds.get(key, ""),
            )
            engine = engines.get(key)
            if engine is not None:
                sample.engine.CopyFrom(engine.to_proto())
            if accumulator is not None:
                accumulator.counts.write_to(sample)
                if accumulator.latency.count:
                    sample.latency.CopyFrom(accumulator.latency.to_proto())
            samples.append(sample)
        return samples
