"""A deployment's latency as a function of the request's size and the engine's load, learned online from this
router's own answers, with the curve's shape taken from the deployment's architecture. Pure: no clock, no I/O.

Time to first token is prefill plus waiting: `ttft = a + b * prefill(p)` where p is the prompt's uncached
kilo-tokens and `prefill(p) = p * (1 + g * p)`: attention makes each prompt token cost more the longer the
context, by `g` per 1k tokens for the architecture (none for linear attention). Time per output token is
`tpot = e + f * running + h * kappa * context`: decoding shares the GPU with the batch, and reads a KV cache
that grows with the context for the architectures that have one (`kappa`; 0 for linear attention, a fraction
for hybrids). The coefficients (a, b) and (e, f, h) are fitted by recursive least squares with a forgetting
factor, starting from a prior; what is not explained yet (a backend that just turned slow) is carried by a
time-decayed mean of the residuals, so a change shows from the next answer, not after a hundred.

Requests waiting in the engine's queue add `waiting * e2e / running` to the first token: each waits for a
running request to finish (Little's law); no coefficient to learn before a queue is first seen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from data_plane.deployments.stats import DecayingMean
from meridian_common.engine_figures import EngineFigures


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
        p, size, lam = self._covariance, len(features), self._forgetting
        p_x = [sum(p[i][j] * features[j] for j in range(size)) for i in range(size)]
        denominator = lam + sum(features[i] * p_x[i] for i in range(size))
        gain = [value / denominator for value in p_x]
        error = observed - self.predict(features)
        self._coefficients = [max(0.0, c + g * error) for c, g in zip(self._coefficients, gain, strict=True)]
        updated = [[(p[i][j] - gain[i] * p_x[j]) / lam for j in range(size)] for i in range(size)]
        trace = sum(updated[i][i] for i in range(size))
        if trace > self._prior_trace:
            scale = self._prior_trace / trace
            updated = [[value * scale for value in row] for row in updated]
        self._covariance = updated
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


class ModelView(NamedTuple):
    """A deployment's fitted coefficients as one immutable value, read by routing decisions."""

    ttft: tuple[float, ...]
    tpot: tuple[float, ...]
    ttft_bias_ms: float  # the recent residual of TTFT not explained by the fit
    tpot_bias_ms: float
    shape: ArchitectureShape
    ttft_observations: int
    tpot_observations: int

    def ttft_ms(self, size: RequestSize) -> float:
        """Prefill, plus the wait behind the engine's queue (the queue's answers priced by this same model)."""
        prefill_ms = max(0.0, _dot(self.ttft, ttft_features(size.uncached_prompt_tokens, self.shape))
                         + self.ttft_bias_ms)
        return prefill_ms + queue_wait_ms(size, prefill_ms + self.tpot_ms(size) * size.output_tokens)

    def tpot_ms(self, size: RequestSize) -> float:
        features = tpot_features(size.running, _context_tokens(size), self.shape)
        return max(0.0, _dot(self.tpot, features) + self.tpot_bias_ms)


def _context_tokens(size: RequestSize) -> float:
    """The KV cache an average output token reads: the whole prompt and half the answer."""
    return (size.prompt_tokens or size.uncached_prompt_tokens) + size.output_tokens / 2


def queue_wait_ms(size: RequestSize, answer_ms: float) -> float:
    """Each request waiting ahead waits for one of the running ones to finish an answer (Little's law)."""
    if size.waiting <= 0:
        return 0.0
    return size.waiting * answer_ms / max(size.running, 1.0)


def _dot(coefficients: tuple[float, ...], features: tuple[float, ...]) -> float:
    return sum(c * x for c, x in zip(coefficients, features, strict=True))


def ttft_features(uncached_prompt_tokens: int, shape: ArchitectureShape) -> tuple[float, float]:
    kilo = max(0, uncached_prompt_tokens) / 1000
    return 1.0, kilo * (1.0 + shape.attention_growth_per_1k * kilo)


def tpot_features(running: float, context_tokens: float, shape: ArchitectureShape) -> tuple[float, float, float]:
    return 1.0, max(0.0, running), shape.kv_context_weight * max(0.0, context_tokens) / 1000


# Priors: nothing known of the intercepts (wide), a weak belief in a prefill of about 10 ms per 1k tokens and in
# decoding slowing a little per request in the batch and per 1k tokens of context.
_TTFT_PRIOR = ((0.0, 10.0), (1e8, 1e4))
_TPOT_PRIOR = ((0.0, 0.05, 0.05), (1e6, 1.0, 1.0))
FORGETTING = 0.99  # about the last hundred answers carry the fit


class LatencyModel:
    """One deployment's size-aware prediction, fed each answer this router gets from it; mutable, owned by the
    deployment's live state. `view()` is what routing reads."""

    __slots__ = ("shape", "_ttft", "_tpot", "_ttft_bias", "_tpot_bias", "ttft_errors", "tpot_errors", "_view")

    def __init__(self, architecture: str, *, decay_s: float, stale_after_s: float) -> None:
        self.shape = shape_of(architecture)
        self._ttft = OnlineRegression(*_TTFT_PRIOR, forgetting=FORGETTING)
        self._tpot = OnlineRegression(*_TPOT_PRIOR, forgetting=FORGETTING)
        self._ttft_bias = DecayingMean(decay_s, stale_after_s)
        self._tpot_bias = DecayingMean(decay_s, stale_after_s)
        self.ttft_errors = ErrorTracker()
        self.tpot_errors = ErrorTracker()
        self._view = self._snapshot(0.0)

    def view(self, now: float) -> ModelView:
        bias_ttft = self._ttft_bias.value(now) or 0.0
        bias_tpot = self._tpot_bias.value(now) or 0.0
        if bias_ttft != self._view.ttft_bias_ms or bias_tpot != self._view.tpot_bias_ms:
            self._view = self._view._replace(ttft_bias_ms=bias_ttft, tpot_bias_ms=bias_tpot)
        return self._view

    def learn(self, size: RequestSize, now: float, *, ttft_ms: float | None, tpot_ms: float | None,
              baseline_ttft_ms: float | None = None, baseline_tpot_ms: float | None = None) -> None:
        """An answer to a request of `size` (its output tokens those generated): its measured time to first token
        (a stream's or a probe's; None for a whole answer, which does not show it) and time per output token.
        The baselines are what a size-blind estimate predicted, kept to compare errors with."""
        view = self.view(now)
        if ttft_ms is not None:
            if view.ttft_observations:
                self.ttft_errors.add(view.ttft_ms(size), baseline_ttft_ms, ttft_ms)
            features = ttft_features(size.uncached_prompt_tokens, self.shape)
            prefill_ms = max(0.0, ttft_ms - (view.ttft_ms(size) - view.ttft_ms(size._replace(waiting=0.0))))
            self._ttft.learn(features, prefill_ms)
            # What the fit does not explain even after this answer: a change too recent for it to have absorbed.
            self._ttft_bias.add(prefill_ms - self._ttft.predict(features), now)
        if tpot_ms is not None:
            if view.tpot_observations:
                self.tpot_errors.add(view.tpot_ms(size), baseline_tpot_ms, tpot_ms)
            features = tpot_features(size.running, _context_tokens(size), self.shape)
            self._tpot.learn(features, tpot_ms)
            self._tpot_bias.add(tpot_ms - self._tpot.predict(features), now)
        self._view = self._snapshot(now)

    def report(self, now: float) -> dict[str, object]:
        """The fit and its error, as `/routing` shows it: the mean absolute percentage error of its last
        predictions, and of the size-blind recent means on the same answers."""
        view = self.view(now)

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "ttft": {"coefficients": [round(c, 4) for c in view.ttft], "bias_ms": round(view.ttft_bias_ms, 3),
                     "answers": view.ttft_observations, "mape": rounded(self.ttft_errors.mape()),
                     "size_blind_mape": rounded(self.ttft_errors.baseline_mape())},
            "tpot": {"coefficients": [round(c, 4) for c in view.tpot], "bias_ms": round(view.tpot_bias_ms, 3),
                     "answers": view.tpot_observations, "mape": rounded(self.tpot_errors.mape()),
                     "size_blind_mape": rounded(self.tpot_errors.baseline_mape())},
        }

    def _snapshot(self, now: float) -> ModelView:
        return ModelView(self._ttft.coefficients, self._tpot.coefficients, self._ttft_bias.value(now) or 0.0,
                         self._tpot_bias.value(now) or 0.0, self.shape, self._ttft.observations,
                         self._tpot.observations)
