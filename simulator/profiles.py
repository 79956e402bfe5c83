"""How an architecture's latency responds to load and to the size of its work: pure functions from (profile,
load, prompt and context lengths, random draw) to the time to first token, the inter-token latency and the
KV cache a request holds. No clock, no I/O."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum


class Profile(StrEnum):
    DENSE = "dense"
    MOE = "moe"
    LINEAR_ATTENTION = "linear-attention"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class Curve:
    """The shape of one profile's latency against load (load 1.0 = as many requests as capacity) and against
    the size of a request (prompt length, context length, KV cache held).

    multiplier(load) = (1 + growth * load ** exponent) * cliff(load), where cliff is 1 up to `knee_load`
    and `cliff_factor * (1 + cliff_growth * (load - knee_load))` past it. Each request then draws a
    mean-one log-normal factor of spread `jitter_sigma`.
    """

    growth: float
    exponent: float
    knee_load: float | None
    cliff_factor: float
    cliff_growth: float
    jitter_sigma: float
    itl_share: float  # how much of the TTFT growth decoding suffers too (0 = none, 1 = all of it)
    attention_growth_per_1k: float
    """Prefill cost per prompt token grows by this fraction per 1,000 prompt tokens: full attention is
    quadratic in length (each token attends to all before it), linear attention is not."""
    decode_context_per_1k: float
    """Each decoded token costs this fraction more per 1,000 tokens of context (prompt + generated so far):
    full attention reads the whole KV cache at every step, linear attention a fixed-size state."""
    kv_share: float
    """The share of (prompt + output) tokens a request holds in the KV cache: 1 when every layer attends,
    0 for a fixed recurrent state."""


@dataclass(frozen=True, slots=True)
class LatencyMultipliers:
    ttft: float
    itl: float
    jitter: float = 1.0  # the request's own draw, kept to recompute its ITL as the load changes


CURVES: dict[Profile, Curve] = {
    # Batched decoding shares the GPU smoothly: latency rises steadily and predictably with load.
    Profile.DENSE: Curve(growth=0.5, exponent=1.5, knee_load=None, cliff_factor=1.0, cliff_growth=0.0,
                         jitter_sigma=0.05, itl_share=0.5, attention_growth_per_1k=0.03,
                         decode_context_per_1k=0.02, kv_share=1.0),
    # Expert routing is uneven from batch to batch, so the same load gives much more scattered latency; with
    # fewer active parameters per token, attention's share of the work (and its growth with length) is larger.
    Profile.MOE: Curve(growth=0.4, exponent=1.5, knee_load=None, cliff_factor=1.0, cliff_growth=0.0,
                       jitter_sigma=0.35, itl_share=0.5, attention_growth_per_1k=0.05,
                       decode_context_per_1k=0.03, kv_share=1.0),
    # Constant-size state keeps latency flat up to capacity; pushed past it (a queue forms) it falls off a
    # cliff, for prefill and decode alike: the failure reported for linear attention under production load.
    # Prefill is linear in length and decoding flat in context; the state is fixed, so no KV cache grows.
    Profile.LINEAR_ATTENTION: Curve(growth=0.0, exponent=1.0, knee_load=1.0, cliff_factor=6.0,
                                    cliff_growth=2.0, jitter_sigma=0.03, itl_share=1.0,
                                    attention_growth_per_1k=0.0, decode_context_per_1k=0.0, kv_share=0.0),
    # Some full-attention layers among linear ones: gradual growth, then a softer cliff at the same point.
    # About a quarter of the layers attend, so length costs a fraction of dense's and a quarter of its cache.
    Profile.HYBRID: Curve(growth=0.3, exponent=1.5, knee_load=1.0, cliff_factor=2.5, cliff_growth=1.0,
                          jitter_sigma=0.12, itl_share=0.75, attention_growth_per_1k=0.01,
                          decode_context_per_1k=0.006, kv_share=0.25),
}

# Loads beyond this are treated as this: multipliers stay finite however deep the queue gets.
MAX_LOAD = 16.0
# The standard-normal draw is clipped so that one unlucky request cannot take an absurd time.
_MAX_Z = 4.0


def load_factor(running: int, waiting: int, capacity: int) -> float:
    """(running + waiting) / capacity: past 1.0 the server has more work than slots."""
    return (running + waiting) / capacity if capacity > 0 else MAX_LOAD


def base_multipliers(profile: Profile, load: float) -> LatencyMultipliers:
    """The profile's curve at `load`, before the per-request jitter."""
    curve = CURVES[profile]
    bounded = min(max(load, 0.0), MAX_LOAD)
    growth = 1.0 + curve.growth * bounded**curve.exponent
    if curve.knee_load is not None and bounded > curve.knee_load:
        growth *= curve.cliff_factor * (1.0 + curve.cliff_growth * (bounded - curve.knee_load))
    return LatencyMultipliers(ttft=growth, itl=1.0 + curve.itl_share * (growth - 1.0))


def latency_multipliers(profile: Profile, load: float, rng: random.Random) -> LatencyMultipliers:
    """Multipliers for one request admitted at `load`; draws exactly one number from `rng`, so equal
    seeds give equal jitter at every load and the curve's order is kept request by request."""
    sigma = CURVES[profile].jitter_sigma
    z = min(max(rng.gauss(0.0, 1.0), -_MAX_Z), _MAX_Z)
    jitter = math.exp(sigma * z - sigma * sigma / 2.0)
    base = base_multipliers(profile, load)
    return LatencyMultipliers(ttft=base.ttft * jitter, itl=base.itl * jitter, jitter=jitter)


def itl_multiplier(profile: Profile, load: float, jitter: float, context_tokens: int = 0) -> float:
    """A running request's inter-token multiplier at the current load of the batch and its own context:
    decoding shares the GPU with whatever runs now, so a request speeds up when the batch empties and slows
    down when it fills, as in a batching engine; and each step reads a KV cache as long as the context."""
    return base_multipliers(profile, load).itl * jitter * context_multiplier(profile, context_tokens)


def context_multiplier(profile: Profile, context_tokens: int) -> float:
    """1 + decode_context_per_1k * context_tokens / 1000: how much a decoding step costs more with this many
    tokens before it (prompt + generated so far) than with none."""
    return 1.0 + CURVES[profile].decode_context_per_1k * max(context_tokens, 0) / 1000.0


def prefill_ms(profile: Profile, prefill_ms_per_1k: float, prompt_tokens: int, cached_tokens: int) -> float:
    """The time to compute a prompt's uncached tokens, before load and jitter:
    prefill_ms_per_1k * (uncached / 1000) * (1 + attention_growth_per_1k * prompt_tokens / 1000).
    Cached tokens (a prefix-cache hit) are not computed again, but the computed ones still attend to them."""
    uncached = max(prompt_tokens - max(cached_tokens, 0), 0)
    growth = 1.0 + CURVES[profile].attention_growth_per_1k * max(prompt_tokens, 0) / 1000.0
    return prefill_ms_per_1k * uncached / 1000.0 * growth


def time_to_first_token_ms(profile: Profile, ttft_ms: float, prefill_ms_per_1k: float, prompt_tokens: int,
                           cached_tokens: int, multiplier: float) -> float:
    """(ttft_ms + prefill_ms) * multiplier, where `multiplier` is the load curve times the jitter. A `ttft_ms`
    of 0 is the instant server the benchmarks subtract: no prefill either, whatever the prompt's length."""
    if ttft_ms == 0:
        return 0.0
    return (ttft_ms + prefill_ms(profile, prefill_ms_per_1k, prompt_tokens, cached_tokens)) * multiplier


def kv_tokens(profile: Profile, prompt_tokens: int, output_tokens: int) -> int:
    """The KV-cache tokens a request reserves for its whole life: prompt + output for a profile whose every
    layer attends, a share of it for a hybrid, none for a fixed recurrent state."""
    return math.ceil(CURVES[profile].kv_share * (max(prompt_tokens, 0) + max(output_tokens, 0)))
