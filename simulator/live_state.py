"""The running simulator's mutable state: current settings, the admission queue (slots and KV cache), the
prefix cache, the random source and the counters that `GET /sim/config` and `/metrics` report."""

from __future__ import annotations

import os
import random
from typing import Any

from meridian_common.workload import lognormal_tokens
from simulator.admission import AdmissionQueue
from simulator.engine_stats import EngineStats
from simulator.prefix_cache import PrefixCache, cached_tokens
from simulator.profiles import (
    LatencyMultipliers,
    Profile,
    itl_multiplier,
    kv_tokens,
    latency_multipliers,
    load_factor,
    time_to_first_token_ms,
)
from simulator.request_parsing import GenerationKind
from simulator.settings import MAX_OUTPUT_TOKENS, SimulatorSettings

_ID_PREFIXES = {GenerationKind.CHAT: "chatcmpl", GenerationKind.COMPLETION: "cmpl"}


class SimulatorState:
    __slots__ = ("_id_stem", "_issued", "admission", "cancelled", "cut", "engine", "errors", "prefix_cache",
                 "rejected", "rng", "served", "settings", "started_unix", "streaming", "throttled")

    def __init__(self, settings: SimulatorSettings, started_unix: int) -> None:
        self.settings = settings
        self.admission = AdmissionQueue(settings.capacity, settings.kv_cache_tokens)
        self.prefix_cache = PrefixCache(settings.prefix_cache_blocks)
        self.engine = EngineStats()
        self.rng = random.Random(settings.seed)
        self.started_unix = started_unix
        self.served = 0
        self.errors = 0  # simulated failures (HTTP 500)
        self.rejected = 0  # invalid or unauthorised requests (HTTP 4xx)
        self.throttled = 0  # simulated saturation (HTTP 429)
        self.cancelled = 0  # clients that went away before the answer was complete
        self.cut = 0  # streams the simulator cut on purpose (cut_after_tokens, cut_rate)
        self.streaming = 0  # streams under way: answer headers sent, last token not yet
        # Ids only need to be unique, not secret: a per-process stem and a counter are enough and cheap.
        self._id_stem = os.urandom(4).hex()
        self._issued = 0

    def apply(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.admission.set_capacity(settings.capacity)
        self.admission.set_kv_budget(settings.kv_cache_tokens)
        self.prefix_cache.resize(settings.prefix_cache_blocks)

    def draw_error(self) -> bool:
        return self._draw(self.settings.error_rate)

    def draw_throttle(self) -> bool:
        return self._draw(self.settings.throttle_rate)

    def draw_cut(self, tokens: int) -> int | None:
        """After how many of its `tokens` a stream is cut, or None when it runs whole."""
        settings = self.settings
        if settings.cut_after_tokens:
            return settings.cut_after_tokens if settings.cut_after_tokens < tokens else None
        if tokens < 2 or not self._draw(settings.cut_rate):
            return None
        return self.rng.randrange(1, tokens)

    def _draw(self, rate: float) -> bool:
        # No draw at 0 or 1, so that a seeded run's sequence does not depend on settings that never fire.
        return rate >= 1.0 or (rate > 0.0 and self.rng.random() < rate)

    def load(self) -> float:
        admission = self.admission
        return load_factor(admission.running, admission.waiting, admission.capacity)

    def draw_latency(self) -> LatencyMultipliers:
        """The profile's multipliers at the current load (counting the request being admitted)."""
        return latency_multipliers(self.settings.profile, self.load(), self.rng)

    def kv_tokens_for(self, prompt_tokens: int, output_tokens: int) -> int:
        """The KV space a generation reserves under the current profile."""
        return kv_tokens(self.settings.profile, prompt_tokens, output_tokens)

    def admit_prompt(self, prompt_tokens: int, block_hashes: tuple[bytes, ...]) -> int:
        """Looks the prompt up in the prefix cache and inserts its blocks (at admission, as an engine does when
        it schedules a prefill), counts it, and returns the tokens it need not compute."""
        engine = self.engine
        engine.prompt_tokens += prompt_tokens
        if not self.prefix_cache.enabled:
            return 0
        cached = cached_tokens(self.prefix_cache.match_and_insert(block_hashes), prompt_tokens)
        engine.prefix_cache_queries += prompt_tokens
        engine.prefix_cache_hits += cached
        return cached

    def ttft_s(self, prompt_tokens: int, cached: int, multipliers: LatencyMultipliers) -> float:
        """Time from admission to the first token: the fixed part plus the prefill of the uncached prompt, both
        scaled by the load curve and the request's jitter."""
        settings = self.settings
        return time_to_first_token_ms(settings.profile, settings.ttft_ms, settings.prefill_ms_per_1k,
                                      prompt_tokens, cached, multipliers.ttft) / 1000.0

    def itl_s(self, jitter: float, context_tokens: int = 0) -> float:
        """The time to the next token of a running request whose jitter is `jitter` and whose context (prompt
        and tokens generated so far) is `context_tokens`, at the current settings and batch: decoding shares
        the GPU with the requests running now, not with those waiting for a slot (they delay the first token
        instead), and never with more than the capacity."""
        settings = self.settings
        admission = self.admission
        batch = min(admission.running, admission.capacity) / admission.capacity if admission.capacity else 1.0
        return settings.itl_ms * itl_multiplier(settings.profile, batch, jitter, context_tokens) / 1000.0

    def kv_cache_usage(self) -> float:
        """The fraction 0..1 of the KV cache in use, as vLLM reports it; for linear attention, whose state per
        sequence is fixed, the fraction of sequence slots in use."""
        admission = self.admission
        if self.settings.profile is Profile.LINEAR_ATTENTION:
            used = admission.running / admission.capacity
        else:
            budget = admission.kv_budget_tokens
            used = admission.kv_reserved / budget if budget else 0.0
        return min(1.0, used)  # a request larger than the budget runs alone; the cache is full, not fuller

    def draw_output_tokens(self) -> int:
        """The length of an answer the request does not cap: `output_tokens`, or with a spread a log-normal
        draw around it (clipped to [1, MAX_OUTPUT_TOKENS]); no draw without a spread, so seeded runs keep the
        sequence they had."""
        settings = self.settings
        return lognormal_tokens(settings.output_tokens, settings.output_tokens_sigma, MAX_OUTPUT_TOKENS, self.rng)

    def next_id(self, kind: GenerationKind) -> str:
        self._issued += 1
        return f"{_ID_PREFIXES[kind]}-{self._id_stem}{self._issued:012x}"

    def view(self) -> dict[str, Any]:
        return {
            **self.settings.runtime_view(),
            "running": self.admission.running,
            "waiting": self.admission.waiting,
            "peak_running": self.admission.peak_running,
            "served": self.served,
            "errors": self.errors,
            "rejected": self.rejected,
            "throttled": self.throttled,
            "cancelled": self.cancelled,
            "cut": self.cut,
            "streaming": self.streaming,
            "kv_cache_reserved_tokens": self.admission.kv_reserved,
            "kv_cache_usage": self.kv_cache_usage(),
            "prefix_cache_blocks_used": len(self.prefix_cache),
            "prefix_cache_queries": self.engine.prefix_cache_queries,
            "prefix_cache_hits": self.engine.prefix_cache_hits,
            "prompt_tokens": self.engine.prompt_tokens,
            "generation_tokens": self.engine.generation_tokens,
        }
