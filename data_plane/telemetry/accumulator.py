"""What a router saw of each deployment since its last telemetry flush, turned into TelemetrySamples.

Pure: no clock, no I/O. The request path calls `record` (a dict lookup and a bisect); the publisher's
collect callback calls `drain` every flush interval with the gauges it read from the router state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meridian_common.histogram import Histogram
from meridian_proto import telemetry_pb2

DeploymentKey = tuple[str, str]
"""(logical model, deployment name)"""


@dataclass(slots=True)
class DeploymentAccumulator:
    """Counts of one deployment since the last drain; mutable, owned by one TelemetryAccumulators."""

    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    tpot: Histogram = field(default_factory=Histogram)
    input_tokens: int = 0
    output_tokens: int = 0

    def record(self, *, ok: bool, latency_ms: float, ttft_ms: float | None, tpot_ms: float | None,
               input_tokens: int, output_tokens: int) -> None:
        self.requests += 1
        if not ok:
            # Same rule as DeploymentStats: a connection refused in 1 ms must not make a broken
            # deployment look fast, so failures count in `errors` only.
            self.errors += 1
            return
        self.latency.record(latency_ms)
        if ttft_ms is not None:
            self.ttft.record(ttft_ms)
        if tpot_ms is not None:
            self.tpot.record(tpot_ms)
        self.input_tokens += max(0, input_tokens)
        self.output_tokens += max(0, output_tokens)


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
    ) -> list[telemetry_pb2.TelemetrySample]:
        """One sample per deployment used since the last drain (a finished request, or one in flight now),
        sorted by key; the accumulators start again from zero. A deployment whose last sample showed
        requests in flight gets one more sample, so that the control plane sees the gauge fall to zero
        even when those requests were abandoned rather than finished. `queue_depth` is keyed by logical model
        (the queue is per model) and is reported on each of that model's samples."""
        by_key, self._by_key = self._by_key, {}
        window_start = self._window_start_unix_ms
        # A clock stepped backwards must not produce a window that ends before it starts.
        window_end = max(now_unix_ms, window_start)
        self._window_start_unix_ms = window_end
        used = {key for key, acc in by_key.items() if acc.requests > 0}
        now_in_flight = {key for key, count in in_flight.items() if count > 0}
        used.update(now_in_flight)
        used.update(self._reported_in_flight)
        self._reported_in_flight = now_in_flight
        queues = queue_depth or {}
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
            )
            if accumulator is not None:
                sample.requests = accumulator.requests
                sample.errors = accumulator.errors
                sample.input_tokens = accumulator.input_tokens
                sample.output_tokens = accumulator.output_tokens
                # An empty histogram stays unset: its ~200 zero buckets would be most of the message,
                # and Histogram.from_proto reads an unset one as empty.
                if accumulator.latency.count:
                    sample.latency.CopyFrom(accumulator.latency.to_proto())
                if accumulator.ttft.count:
                    sample.ttft.CopyFrom(accumulator.ttft.to_proto())
                if accumulator.tpot.count:
                    sample.tpot.CopyFrom(accumulator.tpot.to_proto())
            samples.append(sample)
        return samples
