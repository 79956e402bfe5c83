"""Why a candidate is out of a routing decision, as a type: control flow asks the kind, people read the detail."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ExclusionKind(StrEnum):
    EJECTED = "ejected by the control plane"
    UNHEALTHY = "failing health checks"
    BREAKER_OPEN = "circuit breaker open"
    BACKEND_SATURATED = "backend saturated (429)"
    AT_CAPACITY = "at capacity"
    RATE_LIMITED = "rate limited"
    # The engine's own queue or KV cache is over the model's threshold. Soft: when every deployment is, the
    # thresholds are ignored rather than leave the model with none.
    ENGINE_SATURATED = "engine saturated"
    # The request (its prompt's estimate and its max_tokens) is longer than the deployment's context window: it
    # would be refused there whatever the load, and no wait or panic changes that.
    CONTEXT_TOO_LONG = "context window too small"

    @property
    def is_saturation(self) -> bool:
        """Passes with time (the backend's Retry-After, a slot frees, a bucket refills), unlike a broken
        backend: worth queueing for."""
        return self in (ExclusionKind.BACKEND_SATURATED, ExclusionKind.AT_CAPACITY, ExclusionKind.RATE_LIMITED)

    @property
    def reachable(self) -> bool:
        """The backend answers: when every deployment is out, the least bad of these still serves."""
        return self in (ExclusionKind.EJECTED, ExclusionKind.BREAKER_OPEN)


@dataclass(frozen=True, slots=True)
class Exclusion:
    kind: ExclusionKind
    detail: str = ""  # the figures behind it, e.g. "at capacity 4/4"

    def __str__(self) -> str:
        return self.detail or self.kind.value
