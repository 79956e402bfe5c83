"""What an inference engine says of its own load, as one value both planes use: a router fills it from the
engine's /metrics page, sends it in its telemetry and reads it from the table for other regions' deployments;
the control plane merges it. `from_proto` refuses figures that cannot be true, with the field at fault."""

from __future__ import annotations

import math
from dataclasses import dataclass

from meridian_proto import engine_pb2


def queue_wait_ms(waiting: float, running: float, service_ms: float) -> float:
    """The expected wait of a new request behind `waiting` others in an engine serving `running` at a time, each
    holding its slot for `service_ms`: each waits for a running request to finish (Little's law)."""
    if waiting <= 0:
        return 0.0
    return waiting * service_ms / max(running, 1.0)


class InvalidEngineFigures(ValueError):
    """A figure out of its range (negative counts, a fraction above 1, NaN): the message names it."""


@dataclass(frozen=True, slots=True)
class EngineFigures:
    requests_running: float
    requests_waiting: float
    kv_cache_usage: float | None = None  # fraction 0..1; None when the engine does not report it
    generation_tokens_per_s: float | None = None
    prefix_cache_hit_rate: float | None = None  # fraction 0..1 of prompt tokens served from the prefix cache
    observed_at_unix_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("requests_running", "requests_waiting", "generation_tokens_per_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InvalidEngineFigures(f"{name} must be a finite number >= 0, got {value}")
        for name in ("kv_cache_usage", "prefix_cache_hit_rate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InvalidEngineFigures(f"{name} must be a fraction within [0, 1], got {value}")

    def load(self, max_requests_waiting: int) -> float:
        """How loaded the engine is, 0 (idle) to 1 (saturated): the larger of the KV cache's use and the queue's
        length as a share of `max_requests_waiting` (of the work in the engine when that is 0, no threshold)."""
        waiting = self.requests_waiting
        if max_requests_waiting > 0:
            queue = waiting / max_requests_waiting
        else:
            work = waiting + self.requests_running
            queue = waiting / work if work > 0 else 0.0
        return min(1.0, max(queue, self.kv_cache_usage or 0.0))

    def saturation(self, max_requests_waiting: int, max_kv_cache_usage: float) -> str | None:
        """Why the engine is over a model's saturation thresholds (0 = that threshold is off), or None."""
        if 0 < max_requests_waiting < self.requests_waiting:
            return f"engine queue {self.requests_waiting:g} waiting > {max_requests_waiting}"
        usage = self.kv_cache_usage
        if usage is not None and 0 < max_kv_cache_usage < usage:
            return f"engine KV cache {usage:.0%} used > {max_kv_cache_usage:.0%}"
        return None

    def to_proto(self) -> engine_pb2.EngineFigures:
        message = engine_pb2.EngineFigures(requests_running=self.requests_running,
                                           requests_waiting=self.requests_waiting,
                                           observed_at_unix_ms=self.observed_at_unix_ms)
        for name in ("kv_cache_usage", "generation_tokens_per_s", "prefix_cache_hit_rate"):
            value = getattr(self, name)
            if value is not None:
                setattr(message, name, value)
        return message

    @classmethod
    def from_proto(cls, message: engine_pb2.EngineFigures) -> EngineFigures:
        """Raises InvalidEngineFigures for a figure out of its range."""
        return cls(
            requests_running=message.requests_running,
            requests_waiting=message.requests_waiting,
            kv_cache_usage=message.kv_cache_usage if message.HasField("kv_cache_usage") else None,
            generation_tokens_per_s=(message.generation_tokens_per_s
                                     if message.HasField("generation_tokens_per_s") else None),
            prefix_cache_hit_rate=(message.prefix_cache_hit_rate
                                   if message.HasField("prefix_cache_hit_rate") else None),
            observed_at_unix_ms=message.observed_at_unix_ms,
        )
