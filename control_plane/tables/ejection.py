"""Ejection of unhealthy deployments and their re-admission through a probe, as a small state machine.

    active  --over a threshold, enough requests-->  ejected
    ejected --probe_after_s elapsed------------->  probing   (back in the table with a probe weight)
    probing --over a threshold, enough requests-->  ejected
    probing --healthy, enough requests---------->  active

The thresholds are the error rate, the TTFT p95 and the TPOT p95: never a whole answer's time, which grows
with the answer's length and would eject a healthy deployment for writing long answers.

A model never loses every deployment: when all would be ejected, the one in service the tick before (or
else the least bad) is kept, because a degraded answer beats a certain 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from control_plane.config import ComputeSettings
from control_plane.policy.effective import EjectionThresholds
from control_plane.telemetry.merge import MergedStats

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
    ttft_p95_ms: float = 0.0
    tpot_p95_ms: float = 0.0

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
    for figure, measured, p95_ms, limit_ms in (
        ("TTFT", stats.ttft.count, stats.ttft_p95_ms, thresholds.max_ttft_p95_ms),
        ("TPOT", stats.tpot.count, stats.tpot_p95_ms, thresholds.max_tpot_p95_ms),
    ):
        # Judged on enough answers that measured it: TPOT needs answers of two tokens or more.
        if limit_ms > 0 and measured >= min_requests and p95_ms > limit_ms:
            return Verdict(True, True, f"ejected: {figure} p95 {p95_ms:.1f} ms > {limit_ms:.1f} ms "
                                       f"over {measured} answers")
    return Verdict(True, False, "")


def _judged(state: Health, now: float, reason: str, stats: MergedStats | None) -> DeploymentHealth:
    if stats is None:
        return DeploymentHealth(state, now, reason)
    return DeploymentHealth(state, now, reason, stats.error_rate, stats.ttft_p95_ms, stats.tpot_p95_ms)


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
        return _judged(Health.EJECTED, now, judgement.reason, stats)
    if current.state is Health.PROBING and judgement.judged:
        return _judged(Health.ACTIVE, now, "", stats)
    if current.state is Health.ACTIVE and current.reason:
        # Healthy again after being kept in service: drop the "kept" note.
        return replace(current, reason="")
    return current


def _overshoot(health: DeploymentHealth, thresholds: EjectionThresholds) -> float:
    """How many times over its threshold the worse of TTFT p95 and TPOT p95 is (0 when neither has one)."""
    ratios = [p95_ms / limit_ms for p95_ms, limit_ms in ((health.ttft_p95_ms, thresholds.max_ttft_p95_ms),
                                                          (health.tpot_p95_ms, thresholds.max_tpot_p95_ms))
              if limit_ms > 0]
    return max(ratios, default=0.0)


def keep_one(
    healths: Mapping[str, DeploymentHealth],
    previous: Mapping[str, DeploymentHealth],
    thresholds: EjectionThresholds,
) -> dict[str, DeploymentHealth]:
    """`healths` unchanged unless every deployment is ejected; then one is put back in service.

    Preferring the one that was in service the tick before keeps two bad deployments whose figures cross
    from swapping places (and republishing the table) every tick. Then the lowest error rate wins, then the
    one least far over its TTFT and TPOT thresholds (TTFT and TPOT have no common unit; their ratios to their
    thresholds do).
    """
    if not healths or any(h.in_service for h in healths.values()):
        return dict(healths)

    def badness(name: str) -> tuple[bool, float, float, str]:
        was_serving = previous.get(name, DeploymentHealth()).in_service
        return (not was_serving, healths[name].error_rate, _overshoot(healths[name], thresholds), name)

    chosen = min(healths, key=badness)
    result = dict(healths)
    result[chosen] = replace(healths[chosen], state=Health.ACTIVE, reason=KEPT_REASON)
    return result
