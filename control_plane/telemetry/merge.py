"""Merges the telemetry samples of every router of every region into one figure set per (model, deployment).

Counters add up, the TTFT and TPOT histograms merge bucket by bucket (so the merged quantiles are the
quantiles of the union of observations, not an average of percentiles), and gauges such as in-flight requests
take each router's latest value and add them up across routers. Engine figures (the engine's own queue, KV
cache and tokens/s, which several routers of a region scrape from the same engine) are not added: the most
recently observed ones are kept. The whole-answer `latency` histogram is not read: an answer's time grows with
its length, so nothing here may decide on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from meridian_common.engine_figures import EngineFigures, InvalidEngineFigures
from meridian_common.histogram import Histogram, IncompatibleHistogram
from meridian_common.telemetry_counts import TelemetryCounts
from meridian_proto import telemetry_pb2

StatsKey = tuple[str, str]
"""(logical model, deployment name)."""


@dataclass(frozen=True, slots=True)
class MergedStats:
    """What every router saw of one deployment over the window. The histograms must not be mutated."""

    model: str
    deployment: str
    deployment_region: str
    requests: int
    errors: int
    ttft: Histogram = field(default_factory=Histogram, repr=False)
    """Time to first token of successful answers, in ms."""
    tpot: Histogram = field(default_factory=Histogram, repr=False)
    """Time per output token after the first, in ms, of successful answers of two tokens or more."""
    in_flight: int = 0
    queue_depth: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    routers: frozenset[str] = frozenset()
    dropped_samples: int = 0
    rejected_samples: int = 0
    architecture: str = ""
    engine: EngineFigures | None = None
    """The engine's most recently observed figures, by any router; None when none is recent enough."""

    ttft_p50_ms: float = field(init=False)
    ttft_p95_ms: float = field(init=False)
    tpot_p50_ms: float = field(init=False)
    tpot_p95_ms: float = field(init=False)

    def __post_init__(self) -> None:
        # Computed once: the table computation reads them several times per deployment per region.
        object.__setattr__(self, "ttft_p50_ms", self.ttft.quantile(0.50))
        object.__setattr__(self, "ttft_p95_ms", self.ttft.quantile(0.95))
        object.__setattr__(self, "tpot_p50_ms", self.tpot.quantile(0.50))
        object.__setattr__(self, "tpot_p95_ms", self.tpot.quantile(0.95))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def successes(self) -> int:
        return self.requests - self.errors

    @property
    def typical_output_tokens(self) -> float:
        """Mean answer length in output tokens; 0.0 before any successful answer."""
        return self.output_tokens / self.successes if self.successes else 0.0


@dataclass(slots=True)
class _Accumulator:
    counts: TelemetryCounts = field(default_factory=TelemetryCounts)
    deployment_region: str = ""
    dropped_samples: int = 0
    rejected_samples: int = 0
    # router -> (window end, in_flight, queue_depth) of its latest sample
    gauges: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    architecture: str = ""
    engine: EngineFigures | None = None

    def add(self, sample: telemetry_pb2.TelemetrySample, engine_since_unix_ms: int) -> None:
        try:
            self.counts.add_sample(sample)
        except IncompatibleHistogram:
            # One router on other bucket bounds must not poison the figures of all the others.
            self.rejected_samples += 1
            return
        self.dropped_samples += sample.dropped_samples
        if sample.deployment_region:
            self.deployment_region = sample.deployment_region
        if sample.architecture:
            self.architecture = sample.architecture
        if sample.HasField("engine") and sample.engine.observed_at_unix_ms >= engine_since_unix_ms:
            try:
                engine = EngineFigures.from_proto(sample.engine)
            except InvalidEngineFigures:
                engine = None  # impossible figures from one router: its counts still count
            if engine is not None and (self.engine is None
                                       or engine.observed_at_unix_ms > self.engine.observed_at_unix_ms):
                self.engine = engine
        latest = self.gauges.get(sample.router_id)
        if latest is None or sample.window_end_unix_ms >= latest[0]:
            self.gauges[sample.router_id] = (sample.window_end_unix_ms, sample.in_flight, sample.queue_depth)

    def freeze(self, key: StatsKey) -> MergedStats:
        counts = self.counts
        return MergedStats(
            model=key[0],
            deployment=key[1],
            deployment_region=self.deployment_region,
            requests=counts.requests,
            errors=counts.errors,
            ttft=counts.ttft,
            tpot=counts.tpot,
            in_flight=sum(g[1] for g in self.gauges.values()),
            queue_depth=sum(g[2] for g in self.gauges.values()),
            input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens,
            routers=frozenset(self.gauges),
            dropped_samples=self.dropped_samples,
            rejected_samples=self.rejected_samples,
            architecture=self.architecture,
            engine=self.engine,
        )


def merge_samples(
    samples: Iterable[telemetry_pb2.TelemetrySample], *, since_unix_ms: int = 0, engine_since_unix_ms: int = 0
) -> Mapping[StatsKey, MergedStats]:
    """Merges the samples whose window ended at or after `since_unix_ms`; engine figures observed before
    `engine_since_unix_ms` are left out (an engine's load a minute ago says nothing of its queue now).

    A sample delivered twice (same router, deployment and window) counts once: a retried publish must not
    double a deployment's traffic.
    """
    unique: dict[tuple[str, str, str, int, int], telemetry_pb2.TelemetrySample] = {}
    for sample in samples:
        if sample.window_end_unix_ms < since_unix_ms:
            continue
        identity = (sample.router_id, sample.model, sample.deployment,
                    sample.window_start_unix_ms, sample.window_end_unix_ms)
        unique[identity] = sample
    accumulators: dict[StatsKey, _Accumulator] = {}
    for sample in unique.values():
        accumulators.setdefault((sample.model, sample.deployment), _Accumulator()).add(sample, engine_since_unix_ms)
    return MappingProxyType({key: acc.freeze(key) for key, acc in sorted(accumulators.items())})
