"""Ejection of unhealthy deployments and their re-admission through a probe, as a small state machine.

    active  --over a threshold, enough requests-->  ejected
    ejected --probe_after_s elapsed------------->  probing   (back in the table with a probe weight)
    probing --over a threshold, enough requests-->  ejected
    probing --healthy, enough requests---------->  active

A model never loses every deployment: when all would be ejected, the one in service the tick before (or
else the least bad) is kept, because a degraded answer beats a certain 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from control_plane.config import ComputeSettings
from control_plane.effective_policy import EjectionThresholds
from control_plane.telemetry_merge import MergedStats

KEPT_REASON = "kept in service although over its thresholds: every deployment is, and this is the least bad"
PROBING_REASON = "probing: re-admitted with a probe weight after its ejection"


class Health(StrEnum):
    ACTIVE = "active"
    EJECTED = "ejected"
    PROBING = "probing"


@dataclass(frozen=True, slots=True)
class DeploymentHealth:
    state: Health = Health.ACTIVE
    since: float = 0.0
    reason: str = ""
    # Figures at the last verdict, to rank deployments whose telemetry has gone quiet since their ejection.
    error_rate: float = 0.0
    p95_ms: float = 0.0

    @property
    def in_service(self) -> bool:
        return self.state is not Health.EJECTED


@dataclass(frozen=True, slots=True)
class Verdict:
    judged: bool
    """Whether there were enough requests to judge at all."""
    bad: bool
    reason: str


def verdict(stats: MergedStats | None, thresholds: EjectionThresholds, min_requests: int) -> Verdict:
    if stats is None or stats.requests < min_requests:
        return Verdict(judged=False, bad=False, reason="")
    if stats.error_rate > thresholds.max_error_rate:
        return Verdict(True, True, f"ejected: error rate {stats.error_rate:.3f} > "
                                   f"{thresholds.max_error_rate:.3f} over {stats.requests} requests")
    if thresholds.max_p95_ms > 0 and stats.p95_ms > thresholds.max_p95_ms:
        return Verdict(True, True, f"ejected: p95 {stats.p95_ms:.0f} ms > {thresholds.max_p95_ms:.0f} ms "
                                   f"over {stats.requests} requests")
    return Verdict(True, False, "")


def next_health(
    current: DeploymentHealth,
    stats: MergedStats | None,
    thresholds: EjectionThresholds,
    settings: ComputeSettings,
    now: float,
) -> DeploymentHealth:
    """One tick of one deployment's state machine (the transitions in the module docstring)."""
    judgement = verdict(stats, thresholds, settings.min_requests_for_ejection)
    if current.state is Health.EJECTED:
        if now - current.since >= settings.probe_after_s:
            return replace(current, state=Health.PROBING, since=now, reason=PROBING_REASON)
        return current
    if judgement.bad:
        assert stats is not None
        return DeploymentHealth(Health.EJECTED, now, judgement.reason, stats.error_rate, stats.p95_ms)
    if current.state is Health.PROBING and judgement.judged:
        return DeploymentHealth(Health.ACTIVE, now, "", stats.error_rate if stats else 0.0,
                                stats.p95_ms if stats else 0.0)
    if current.state is Health.ACTIVE and current.reason:
        # Healthy again after being kept in service: drop the "kept" note.
        return replace(current, reason="")
    return current


def keep_one(
    healths: Mapping[str, DeploymentHealth], previous: Mapping[str, DeploymentHealth]
) -> dict[str, DeploymentHealth]:
    """`healths` unchanged unless every deployment is ejected; then one is put back in service.

    Preferring the one that was in service the tick before keeps two bad deployments whose figures cross
    from swapping places (and republishing the table) every tick.
    """
    if not healths or any(h.in_service for h in healths.values()):
        return dict(healths)

    def badness(name: str) -> tuple[bool, float, float, str]:
        was_serving = previous.get(name, DeploymentHealth()).in_service
        return (not was_serving, healths[name].error_rate, healths[name].p95_ms, name)

    chosen = min(healths, key=badness)
    result = dict(healths)
    result[chosen] = replace(healths[chosen], state=Health.ACTIVE, reason=KEPT_REASON)
    return result
