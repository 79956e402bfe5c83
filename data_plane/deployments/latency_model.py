"""How a deployment's latency changes with the request's size and the engine's load, learned online from this
router's own answers, with the curve's shape taken from the deployment's architecture. Pure: no clock, no I/O.

The level (how fast the deployment is right now) is the recent, time-decayed mean the statistics keep: it moves
within seconds when a backend slows down or recovers. This model says how one request differs from the recent
ones: time to first token grows with the prefill of its uncached prompt, `prefill(p) = p * (1 + g * p)` for p
kilo-tokens (attention makes each token cost more the longer the context, by `g` per 1k tokens for the
architecture; none for linear attention); time per output token grows with the batch and, for the
architectures that read a KV cache that grows with the context, with the context (`kappa`: 0 for linear
attention, a fraction for hybrids). The slopes are fitted by recursive least squares with forgetting on values
centred on their recent means, so a backend turning slow moves the level, not the slopes; requests of the
same size teach nothing about slopes, and the prior stands.

Requests waiting in the engine's queue add `waiting * answer / running` to the first token: each waits for a
running request to finish (Little's law); the level is taken without the waits that were in it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from data_plane.deployments.stats import DecayingMeans
from meridian_common.engine_figures import EngineFigures, queue_wait_ms


@dataclass(frozen=True, slots=True)
class ArchitectureShape:
    attention_growth_per_1k: float  # g: how much each prompt token's prefill cost grows per 1k tokens of context
    kv_context_weight: float  # kappa: how much of decoding reads a KV cache that grows with the context


# The shapes of the curves, not their scale (which depends on the hardware and is learned): full attention's
# per-token prefill cost grows with the context; MoE's fewer active parameters make attention dominate sooner;
# a hybrid has a quarter of its layers attending; linear attention keeps a fixed-size state.
ARCHITECTURE_SHAPES: dict[str, ArchitectureShape] = {
    "dense": ArchitectureShape(0.03, 1.0),
    "moe": ArchitectureShape(0.05, 1.0),
    "hybrid": ArchitectureShape(0.01, 0.3),
    "linear-attention": ArchitectureShape(0.0, 0.0),
}
UNKNOWN_SHAPE = ArchitectureShape(0.03, 1.0)  # an undeclared architecture is assumed to be full attention


def shape_of(architecture: str) -> ArchitectureShape:
    return ARCHITECTURE_SHAPES.get(architecture, UNKNOWN_SHAPE)


class OnlineRegression:
    """Recursive least squares with exponential forgetting over a few features, started from a prior mean and
    covariance; coefficients are kept non-negative (no latency falls as a request grows) and the covariance is
    kept within the prior's (features that never vary would otherwise blow it up under forgetting)."""

    __slots__ = ("_coefficients", "_covariance", "_forgetting", "_prior_trace", "observations")

    def __init__(self, prior_mean: tuple[float, ...], prior_variance: tuple[float, ...], forgetting: float) -> None:
        if len(prior_mean) != len(prior_variance) or not 0.0 < forgetting <= 1.0:
            raise ValueError(f"one variance per coefficient and 0 < forgetting <= 1, got {prior_mean}, "
                             f"{prior_variance}, {forgetting}")
        size = len(prior_mean)
        self._coefficients = list(prior_mean)
        self._covariance = [[prior_variance[i] if i == j else 0.0 for j in range(size)] for i in range(size)]
        self._prior_trace = sum(prior_variance)
        self._forgetting = forgetting
        self.observations = 0

    @property
    def coefficients(self) -> tuple[float, ...]:
        return tuple(self._coefficients)

    def predict(self, features: tuple[float, ...]) -> float:
        return sum(c * x for c, x in zip(self._coefficients, features, strict=True))

    def learn(self, features: tuple[float, ...], observed: float) -> None:
        # Plain loops over a list of lists: with one or two features this runs once per answer, and the
        # comprehensions and generators of a general version cost more than the arithmetic.
        p, lam, size = self._covariance, self._forgetting, len(features)
        coefficients = self._coefficients
        p_x = [0.0] * size
        error = observed
        for i in range(size):
            row, total = p[i], 0.0
            for j in range(size):
                total += row[j] * features[j]
            p_x[i] = total
            error -= coefficients[i] * features[i]
        denominator = lam
        for i in range(size):
            denominator += features[i] * p_x[i]
        trace = 0.0
        for i in range(size):
            gain = p_x[i] / denominator
            coefficients[i] = max(0.0, coefficients[i] + gain * error)
            row = p[i]
            for j in range(size):
                row[j] = (row[j] - gain * p_x[j]) / lam
            trace += row[i]
        if trace > self._prior_trace:
            scale = self._prior_trace / trace
            for row in p:
                for j in range(size):
                    row[j] *= scale
        self.observations += 1


class ErrorTracker:
    """The mean absolute percentage error of the last `size` predictions, and of a baseline's, on the same
    observations."""

    __slots__ = ("_errors", "_baseline")

    def __init__(self, size: int = 200) -> None:
        self._errors: deque[float] = deque(maxlen=size)
        self._baseline: deque[float] = deque(maxlen=size)

    def add(self, predicted: float, baseline: float | None, observed: float) -> None:
        if observed <= 0:
            return
        self._errors.append(abs(predicted - observed) / observed)
        if baseline is not None:
            self._baseline.append(abs(baseline - observed) / observed)

    @property
    def count(self) -> int:
        return len(self._errors)

    def mape(self) -> float | None:
        return sum(self._errors) / len(self._errors) if self._errors else None

    def baseline_mape(self) -> float | None:
        return sum(self._baseline) / len(self._baseline) if self._baseline else None


class RequestSize(NamedTuple):
    """What a request and the engine looked like when it was sent: what the prediction is a function of."""

    uncached_prompt_tokens: int  # the prompt less what the deployment's prefix cache likely holds
    output_tokens: int  # expected (routing) or generated (learning)
    running: float  # requests the engine is generating (this router's in flight when it does not say)
    waiting: float  # requests queued in the engine (0 when it does not say)
    prompt_tokens: int = 0  # the whole prompt, cached or not: the context decoding reads


def request_size(prompt_tokens: int, cached_prompt_tokens: int, output_tokens: int, engine: EngineFigures | None,
                 in_flight: int) -> RequestSize:
    """A request of `prompt_tokens` on a deployment whose prefix cache likely holds `cached_prompt_tokens` of it,
    with the engine's batch and queue (this router's requests in flight when the engine says nothing)."""
    return RequestSize(
        uncached_prompt_tokens=max(0, prompt_tokens - cached_prompt_tokens),
        output_tokens=output_tokens,
        running=engine.requests_running if engine is not None else in_flight,
        waiting=engine.requests_waiting if engine is not None else 0.0,
        prompt_tokens=prompt_tokens,
    )


def prefill_feature(size: RequestSize, shape: ArchitectureShape) -> float:
    kilo = max(0, size.uncached_prompt_tokens) / 1000
    return kilo * (1.0 + shape.attention_growth_per_1k * kilo)


def kv_context_feature(size: RequestSize, shape: ArchitectureShape) -> float:
    """The KV cache an average output token reads (the whole prompt and half the answer), in kilo-tokens, weighed
    by how much of decoding reads it."""
    context = (size.prompt_tokens or size.uncached_prompt_tokens) + size.output_tokens / 2
    return shape.kv_context_weight * context / 1000


class ModelView(NamedTuple):
    """A deployment's fitted slopes and the recent means they are centred on, as one immutable value that routing
    decisions read."""

    prefill_slope_ms: float  # per unit of prefill_feature
    mean_prefill: float  # the recent answers' prefill_feature
    mean_queue_wait_ms: float  # the queue waits that were in the recent answers' TTFT
    running_slope_ms: float  # TPOT per request in the batch
    kv_context_slope_ms: float  # TPOT per unit of kv_context_feature
    mean_running: float
    mean_kv_context: float
    shape: ArchitectureShape
    ttft_observations: int
    tpot_observations: int

    def tpot_ms(self, level_ms: float, size: RequestSize) -> float:
        """This request's TPOT, from the deployment's recent mean `level_ms`."""
        return max(0.0, level_ms + self.running_slope_ms * (size.running - self.mean_running)
                   + self.kv_context_slope_ms * (kv_context_feature(size, self.shape) - self.mean_kv_context))

    def ttft_ms(self, level_ms: float, size: RequestSize, tpot_ms: float) -> float:
        """This request's TTFT, from the deployment's recent mean `level_ms`: its own prefill, and the wait behind
        the engine's queue now instead of the waits the recent answers had."""
        prefill_ms = max(0.0, level_ms - self.mean_queue_wait_ms
                         + self.prefill_slope_ms * (prefill_feature(size, self.shape) - self.mean_prefill))
        return prefill_ms + queue_wait_ms(size.waiting, size.running, prefill_ms + tpot_ms * size.output_tokens)


# A weak prior: a prefill of about 10 ms per 1k tokens, decoding slowing a little per request in the batch and
# per 1k tokens of context. Its variance is worth one answer whose feature is 1 away from the mean: an answer
# of a very different size outweighs it at once, while one near the mean (whose error is mostly the level's,
# as when a backend has just turned slow) moves the slope only in proportion to its distance.
_PREFILL_PRIOR = ((10.0,), (1.0,))
_TPOT_PRIOR = ((0.05, 0.05), (1.0, 1.0))
FORGETTING = 0.99  # about the last hundred answers carry the fit


class LatencyModel:
    """One deployment's size-aware corrections, fed each answer this router gets from it; mutable, owned by the
    deployment's live state. `view()` is what routing reads."""

    __slots__ = ("shape", "_stale_after_s", "_prefill", "_tpot", "_ttft_means", "_tpot_means", "ttft_errors",
                 "tpot_errors", "_view", "_view_until")

    def __init__(self, architecture: str, *, decay_s: float, stale_after_s: float) -> None:
        self.shape = shape_of(architecture)
        self._stale_after_s = stale_after_s
        self._prefill = OnlineRegression(*_PREFILL_PRIOR, forgetting=FORGETTING)
        self._tpot = OnlineRegression(*_TPOT_PRIOR, forgetting=FORGETTING)
        # (prefill feature, queue wait ms, TTFT without the wait ms) and (running, KV context, TPOT ms)
        self._ttft_means = DecayingMeans(decay_s, stale_after_s)
        self._tpot_means = DecayingMeans(decay_s, stale_after_s)
        self.ttft_errors = ErrorTracker()
        self.tpot_errors = ErrorTracker()
        self._view = self._snapshot(0.0)

    def view(self, now: float) -> ModelView:
        """Read on every routing decision: rebuilt only after an answer, or when a mean goes stale."""
        if now > self._view_until:
            self._view = self._snapshot(now)
        return self._view

    def learn(self, size: RequestSize, now: float, *, ttft_ms: float | None, tpot_ms: float | None,
              predicted: tuple[float, float] | None = None, baseline: tuple[float | None, float | None] = (None, None)
              ) -> None:
        """An answer to a request of `size` (its output tokens those generated): its measured time to first token
        (a stream's or a probe's; None for a whole answer, which does not show it) and time per output token.
        `predicted` is what routing predicted for it (TTFT, TPOT), `baseline` what the size-blind recent means
        did: their errors are kept to compare."""
        if predicted is not None:
            if ttft_ms is not None:
                self.ttft_errors.add(predicted[0], baseline[0], ttft_ms)
            if tpot_ms is not None:
                self.tpot_errors.add(predicted[1], baseline[1], tpot_ms)
        if tpot_ms is not None:
            kv_context = kv_context_feature(size, self.shape)
            means = self._tpot_means.values(now)
            if means is not None:
                running, context, level = means
                self._tpot.learn((size.running - running, kv_context - context), tpot_ms - level)
            self._tpot_means.add((size.running, kv_context, tpot_ms), now)
        if ttft_ms is not None:
            prefill = prefill_feature(size, self.shape)
            means = self._ttft_means.values(now)
            answer_ms = ttft_ms
            if means is not None:
                answer_ms = means[2]
            tpot_level = self._tpot_means.values(now)
            if tpot_level is not None:
                answer_ms += tpot_level[2] * size.output_tokens
            wait_ms = min(ttft_ms, queue_wait_ms(size.waiting, size.running, answer_ms))
            if means is not None:
                self._prefill.learn((prefill - means[0],), ttft_ms - wait_ms - means[2])
            self._ttft_means.add((prefill, wait_ms, ttft_ms - wait_ms), now)
        self._view_until = -1.0  # rebuilt when next read

    def report(self, now: float) -> dict[str, object]:
        """The fit and its error, as `/routing` shows it: the mean absolute percentage error of routing's last
        predictions, and of the size-blind recent means on the same answers."""
        view = self.view(now)

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "ttft": {"prefill_ms_per_unit": round(view.prefill_slope_ms, 4), "answers": view.ttft_observations,
                     "mape": rounded(self.ttft_errors.mape()),
                     "size_blind_mape": rounded(self.ttft_errors.baseline_mape())},
            "tpot": {"ms_per_running_request": round(view.running_slope_ms, 5),
                     "ms_per_1k_context": round(view.kv_context_slope_ms, 5), "answers": view.tpot_observations,
                     "mape": rounded(self.tpot_errors.mape()),
                     "size_blind_mape": rounded(self.tpot_errors.baseline_mape())},
        }

    def _snapshot(self, now: float) -> ModelView:
        # The view holds until a mean it uses goes stale (never, for means not known yet: only an answer changes them).
        ttft_means, tpot_means = self._ttft_means.values(now), self._tpot_means.values(now)
        known_since = [m.last_at for m, values in ((self._ttft_means, ttft_means), (self._tpot_means, tpot_means))
                       if values is not None]
        self._view_until = min(known_since) + self._stale_after_s if known_since else float("inf")
        ttft_means = ttft_means or [0.0, 0.0, 0.0]
        tpot_means = tpot_means or [0.0, 0.0, 0.0]
        (prefill_slope,) = self._prefill.coefficients
        running_slope, context_slope = self._tpot.coefficients
        return ModelView(prefill_slope, ttft_means[0], ttft_means[1], running_slope, context_slope, tpot_means[0],
                         tpot_means[1], self.shape, self._prefill.observations, self._tpot.observations)
