"""A request's latency on one deployment, predicted from its size: time to first token plus time per output
token times the answer's expected length. Pure over plain values.

Each figure comes from the best source at hand: this router's own recent answers (which already include the
network round trip to a remote region), through the deployment's size model when it has been fitted (its
prompt, less what the prefix cache likely holds, the engine's queue and batch: `latency_model`), else the
control plane's merged median plus the RTT, else the median of the model's other deployments (so an unknown
deployment competes on what is known, and gets explored) plus its RTT.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple

from data_plane.deployments.latency_model import ModelView, RequestSize
from data_plane.deployments.stats import StatsView
from data_plane.table.snapshot import DeploymentSpec

# Answers of varied sizes a size model needs before it corrects the recent means: fewer leave its prior guessing.
MIN_FITTED = 3


class Source(StrEnum):
    FITTED = "measured, by size"  # this router's recent answers, through the deployment's size model
    MEASURED = "measured"  # this router's own recent answers (or health probes, for TTFT)
    CONTROL_PLANE = "control plane"  # the merged median in the table
    ASSUMED = "assumed"  # the median of the model's other deployments


class Prediction(NamedTuple):
    """A NamedTuple rather than a frozen dataclass: one is built per candidate per request, on the hot path."""

    ttft_ms: float
    tpot_ms: float
    output_tokens: int
    ttft_source: Source
    tpot_source: Source

    @property
    def total_ms(self) -> float:
        return self.ttft_ms + self.tpot_ms * self.output_tokens

    @property
    def observed(self) -> bool:
        return Source.ASSUMED not in (self.ttft_source, self.tpot_source)

    def latency_ms(self, streaming: bool) -> float:
        """What a client waits for: the first token of a stream, or the whole answer."""
        return self.ttft_ms if streaming else self.total_ms

    def describe(self) -> str:
        if self.ttft_source == self.tpot_source:
            return str(self.ttft_source)
        return f"ttft {self.ttft_source}, tpot {self.tpot_source}"


class Known(NamedTuple):
    """One deployment's figures before priors: None where neither this router nor the control plane knows.
    `backend_ttft_ms` is the TTFT without the RTT, comparable across regions."""

    ttft_ms: float | None
    tpot_ms: float | None
    backend_ttft_ms: float | None
    ttft_source: Source
    tpot_source: Source
    # How long a stream has waited for its first token, when that is longer than the window's answers took: the
    # freshest evidence there is, and a floor under the TTFT routing predicts (0 when no stream is stuck).
    stuck_wait_ms: float = 0.0


def known_figures(stats: StatsView, spec: DeploymentSpec) -> Known:
    """The size-blind figures: what was measured recently whatever the requests' sizes."""
    rtt_ms = spec.added_latency_ms
    ttft_ms, ttft_source, stuck_wait_ms = stats.ttft_ms, Source.MEASURED, 0.0
    if ttft_ms is not None:
        if stats.waiting_first_token_ms > max(ttft_ms, stats.ttft_p95_ms):
            stuck_wait_ms = stats.waiting_first_token_ms
    elif spec.ttft_ms > 0:
        ttft_ms, ttft_source = spec.ttft_ms + rtt_ms, Source.CONTROL_PLANE
    else:
        ttft_source = Source.ASSUMED
    tpot_ms, tpot_source = stats.tpot_ms, Source.MEASURED
    if tpot_ms is None:
        tpot_ms, tpot_source = (spec.tpot_ms, Source.CONTROL_PLANE) if spec.tpot_ms > 0 else (None, Source.ASSUMED)
    backend_ttft_ms = None if ttft_ms is None else max(0.0, max(ttft_ms, stuck_wait_ms) - rtt_ms)
    return Known(ttft_ms, tpot_ms, backend_ttft_ms, ttft_source, tpot_source, stuck_wait_ms)


class Priors(NamedTuple):
    backend_ttft_ms: float
    tpot_ms: float


NO_PRIORS = Priors(0.0, 0.0)


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    values.sort()
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def priors(known: Sequence[Known]) -> Priors:
    """The medians of what is known of a model's deployments (0 when nothing is)."""
    return Priors(_median([k.backend_ttft_ms for k in known if k.backend_ttft_ms is not None]),
                  _median([k.tpot_ms for k in known if k.tpot_ms is not None]))


def predict(known: Known, spec: DeploymentSpec, prior: Priors, size: RequestSize,
            model: ModelView | None = None) -> Prediction:
    """This request's figures on the deployment. The size model speaks only where this router measured the
    deployment recently (its figures are then current) and has fitted enough answers. A stuck stream's wait is
    not in it: that is another request's, evidence for routing (`routed`), not this request's size."""
    ttft_ms = known.ttft_ms if known.ttft_ms is not None else prior.backend_ttft_ms + spec.added_latency_ms
    tpot_ms = known.tpot_ms if known.tpot_ms is not None else prior.tpot_ms
    ttft_source, tpot_source = known.ttft_source, known.tpot_source
    if model is not None:
        if tpot_source is Source.MEASURED and model.tpot_observations >= MIN_FITTED:
            tpot_ms, tpot_source = model.tpot_ms(tpot_ms, size), Source.FITTED
        if ttft_source is Source.MEASURED and model.ttft_observations >= MIN_FITTED:
            ttft_ms, ttft_source = model.ttft_ms(ttft_ms, size, tpot_ms), Source.FITTED
    return Prediction(ttft_ms, tpot_ms, max(0, size.output_tokens), ttft_source, tpot_source)


def routed(prediction: Prediction, known: Known) -> Prediction:
    """The prediction routing ranks: a stuck stream's wait is a floor under its TTFT, not an estimate. A stream
    that has waited 40 ms so far says the TTFT is at least that, while the size model may know from the engine's
    queue that it will be seconds."""
    if known.stuck_wait_ms > prediction.ttft_ms:
        return prediction._replace(ttft_ms=known.stuck_wait_ms)
    return prediction
