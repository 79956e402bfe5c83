"""The filters every policy runs first: each names what it checks and says why a candidate is out."""

from __future__ import annotations

from collections.abc import Callable

from data_plane.breaker import BreakerState
from data_plane.policies.candidate import Candidate

Filter = Callable[[Candidate], "str | None"]


def not_ejected(candidate: Candidate) -> str | None:
    return "ejected by the control plane" if candidate.deployment.ejected else None


def healthy(candidate: Candidate) -> str | None:
    return None if candidate.healthy else "failing health checks"


def breaker_not_open(candidate: Candidate) -> str | None:
    # Half-open stays eligible: the breaker's admit lets exactly one trial through.
    return "circuit breaker open" if candidate.breaker_state is BreakerState.OPEN else None


def has_capacity(candidate: Candidate) -> str | None:
    limit = candidate.deployment.max_concurrency
    in_flight = candidate.stats.in_flight
    return capacity_reason(in_flight, limit)


def capacity_reason(in_flight: int, limit: int) -> str | None:
    return f"at capacity {in_flight}/{limit}" if 0 < limit <= in_flight else None


def within_rate_limit(candidate: Candidate) -> str | None:
    return candidate.rate_limited


FILTERS: tuple[Filter, ...] = (not_ejected, healthy, breaker_not_open, has_capacity, within_rate_limit)

# The reasons a request may wait out in the model's queue: they pass with time, unlike a broken backend.
_SATURATION_PREFIXES = ("at capacity", "rate limited")


def is_saturation(reason: str | None) -> bool:
    return reason is not None and reason.startswith(_SATURATION_PREFIXES)


def excluded_because(candidate: Candidate) -> str | None:
    """The first filter's reason to exclude the candidate, or None when it is eligible."""
    for check in FILTERS:
        reason = check(candidate)
        if reason is not None:
            return reason
    return None
