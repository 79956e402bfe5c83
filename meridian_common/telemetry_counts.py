"""The figures a TelemetrySample carries for one deployment over a window, as one value both planes fill: a
router counts its answers into it and writes it into its sample; the control plane adds up the samples of
every router."""

from __future__ import annotations

from dataclasses import dataclass, field

from meridian_common.histogram import Histogram
from meridian_proto import telemetry_pb2


@dataclass(slots=True)
class TelemetryCounts:
    """Mutable; owned by one accumulator. `ttft` and `tpot` are in ms, of successful answers only."""

    requests: int = 0
    errors: int = 0
    ttft: Histogram = field(default_factory=Histogram)
    tpot: Histogram = field(default_factory=Histogram)
    input_tokens: int = 0
    output_tokens: int = 0

    def record_answer(self, *, ok: bool, ttft_ms: float | None, tpot_ms: float | None, input_tokens: int,
                      output_tokens: int) -> None:
        self.requests += 1
        if not ok:
            # A connection refused in 1 ms must not make a broken deployment look fast, so failures count in
            # `errors` only.
            self.errors += 1
            return
        if ttft_ms is not None:
            self.ttft.record(ttft_ms)
        if tpot_ms is not None:
            self.tpot.record(tpot_ms)
        self.input_tokens += max(0, input_tokens)
        self.output_tokens += max(0, output_tokens)

    def write_to(self, sample: telemetry_pb2.TelemetrySample) -> None:
        sample.requests = self.requests
        sample.errors = self.errors
        sample.input_tokens = self.input_tokens
        sample.output_tokens = self.output_tokens
        # An empty histogram stays unset: its ~200 zero buckets would be most of the message, and
        # Histogram.from_proto reads an unset one as empty.
        if self.ttft.count:
            sample.ttft.CopyFrom(self.ttft.to_proto())
        if self.tpot.count:
            sample.tpot.CopyFrom(self.tpot.to_proto())

    def add_sample(self, sample: telemetry_pb2.TelemetrySample) -> None:
        """Adds one router's sample; raises IncompatibleHistogram, leaving the counts as they were, when its
        histograms have other bucket bounds."""
        ttft = Histogram.from_proto(sample.ttft)
        tpot = Histogram.from_proto(sample.tpot)
        self.ttft.merge(ttft)
        self.tpot.merge(tpot)
        self.requests += sample.requests
        self.errors += min(sample.errors, sample.requests)
        self.input_tokens += sample.input_tokens
        self.output_tokens += sample.output_tokens
