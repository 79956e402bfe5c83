"""The filters every policy runs first: each names what it checks and says, with a typed exclusion, why a
candidate is out."""

from __future__ import annotations

from collections.abc import Callable

from data_plane.deployments.breaker import BreakerState
from data_plane.policies.candidate import Candidate
from data_plane.policies.exclusion import Exclusion, ExclusionKind

Filter = Callable[[Candidate], "Exclusion | None"]
_EJECTED = Exclusion(ExclusionKind.EJECTED)
_UNHEALTHY = Exclusion(ExclusionKind.UNHEALTHY)
_BREAKER_OPEN = Exclusion(ExclusionKind.BREAKER_OPEN)


def not_ejected(candidate: Candidate) -> Exclusion | None:
    return _EJECTED if candidate.deployment.ejected else None


def healthy(candidate: Candidate) -> Exclusion | None:
    return None if candidate.healthy else _UNHEALTHY


def breaker_not_open(candidate: Candidate) -> Exclusion | None:
    # Half-open stays eligible: the breaker's admit lets exactly one trial through.
    return _BREAKER_OPEN if candidate.breaker_state is BreakerState.OPEN else None


def backend_not_saturated(candidate: Candidate) -> Exclusion | None:
    return saturation_exclusion(candidate.backend_saturated)


def saturation_exclusion(detail: str | None) -> Exclusion | None:
    return Exclusion(ExclusionKind.BACKEND_SATURATED, detail) if detail is not None else None


def has_capacity(candidate: Candidate) -> Exclusion | None:
    return capacity_exclusion(candidate.stats.in_flight, candidate.deployment.max_concurrency)


def capacity_exclusion(in_flight: int, limit: int) -> Exclusion | None:
    if 0 < limit <= in_flight:
        return Exclusion(ExclusionKind.AT_CAPACITY, f"at capacity {in_flight}/{limit}")
    return None


def within_rate_limit(candidate: Candidate) -> Exclusion | None:
    return rate_limit_exclusion(candidate.rate_limited)


def rate_limit_exclusion(detail: str | None) -> Exclusion | None:
    return Exclusion(ExclusionKind.RATE_LIMITED, detail) if detail is not None else None


def context_exclusion(context_window: int, context_tokens: int) -> Exclusion | None:
    """Out when the deployment declares a window (0 = not declared: anything goes) smaller than the request's
    tokens. The prompt's are an estimate (about four characters a token), so a request near the limit may pass
    and be refused by the backend (a 400 the client gets as sent) or be kept from a window it would fit."""
    if 0 < context_window < context_tokens:
        return Exclusion(ExclusionKind.CONTEXT_TOO_LONG,
                         f"context window {context_window} < about {context_tokens} tokens requested")
    return None


FILTERS: tuple[Filter, ...] = (not_ejected, healthy, breaker_not_open, backend_not_saturated, has_capacity,
                               within_rate_limit)


def exclusion(candidate: Candidate) -> Exclusion | None:
    """The first filter's reason to exclude the candidate, or None when it is eligible."""
    for check in FILTERS:
        reason = check(candidate)
        if reason is not None:
            return reason
    return None
