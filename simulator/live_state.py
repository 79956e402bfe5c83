"""The running simulator's mutable state: current settings, the admission queue, the random source and
the counters that `GET /sim/config` and `/metrics` report."""

from __future__ import annotations

import os
import random
from typing import Any

from meridian_common.workload import lognormal_tokens
from simulator.admission import AdmissionQueue
from simulator.profiles import LatencyMultipliers, itl_multiplier, latency_multipliers, load_factor
from simulator.request_parsing import GenerationKind
from simulator.settings import MAX_OUTPUT_TOKENS, SimulatorSettings

_ID_PREFIXES = {GenerationKind.CHAT: "chatcmpl", GenerationKind.COMPLETION: "cmpl"}


class SimulatorState:
    __slots__ = ("_id_stem", "_issued", "admission", "cancelled", "errors", "rejected", "rng", "served",
                 "settings", "started_unix", "throttled")

    def __init__(self, settings: SimulatorSettings, started_unix: int) -> None:
        self.settings = settings
        self.admission = AdmissionQueue(settings.capacity)
        self.rng = random.Random(settings.seed)
        self.started_unix = started_unix
        self.served = 0
        self.errors = 0  # simulated failures (HTTP 500)
        self.rejected = 0  # invalid or unauthorised requests (HTTP 4xx)
        self.throttled = 0  # simulated saturation (HTTP 429)
        self.cancelled = 0  # clients that went away before the answer was complete
        # Ids only need to be unique, not secret: a per-process stem and a counter are enough and cheap.
        self._id_stem = os.urandom(4).hex()
        self._issued = 0

    def apply(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.admission.set_capacity(settings.capacity)

    def draw_error(self) -> bool:
        return self._draw(self.settings.error_rate)

    def draw_throttle(self) -> bool:
        return self._draw(self.settings.throttle_rate)

    def _draw(self, rate: float) -> bool:
        # No draw at 0 or 1, so that a seeded run's sequence does not depend on settings that never fire.
        return rate >= 1.0 or (rate > 0.0 and self.rng.random() < rate)

    def load(self) -> float:
        admission = self.admission
        return load_factor(admission.running, admission.waiting, admission.capacity)

    def draw_latency(self) -> LatencyMultipliers:
        """The profile's multipliers at the current load (counting the request being admitted)."""
        return latency_multipliers(self.settings.profile, self.load(), self.rng)

    def itl_s(self, jitter: float) -> float:
        """The time to the next token of a running request whose jitter is `jitter`, at the current settings
        and batch: decoding shares the GPU with the requests running now, not with those waiting for a slot
        (they delay the first token instead), and never with more than the capacity."""
        settings = self.settings
        admission = self.admission
        batch = min(admission.running, admission.capacity) / admission.capacity if admission.capacity else 1.0
        return settings.itl_ms * itl_multiplier(settings.profile, batch, jitter) / 1000.0

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
        }
