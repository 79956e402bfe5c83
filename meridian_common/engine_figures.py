"""What an inference engine says of its own load, as one value both planes use: a router fills it from the
engine's /metrics page, sends it in its telemetry and reads it from the table for other regions' deployments;
the control plane merges it. `from_proto` refuses figures that cannot be true, with the field at fault."""

from __future__ import annotations

import math
from dataclasses import dataclass

from meridian_proto import engine_pb2


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
