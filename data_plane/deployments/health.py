"""Active health of one deployment as a pure state machine, fed by periodic probes and by live traffic:
failures of either kind take it out, only consecutive successful probes bring it back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class HealthState(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class HealthEvent(StrEnum):
    FAILURES_REACHED = "failures-reached"  # unhealthy_after consecutive failures, probes or live
    PROBES_PASSED = "probes-passed"  # healthy_after consecutive successful probes


TRANSITIONS: Mapping[HealthState, Mapping[HealthEvent, HealthState]] = MappingProxyType({
    HealthState.HEALTHY: {HealthEvent.FAILURES_REACHED: HealthState.UNHEALTHY},
    HealthState.UNHEALTHY: {HealthEvent.PROBES_PASSED: HealthState.HEALTHY},
})


class HealthProtocolError(Exception):
    """An event the current health state does not allow; the state is left as it was."""


@dataclass(frozen=True, slots=True)
class HealthChange:
    from_state: HealthState
    to_state: HealthState
    reason: str


class DeploymentHealth:
    """Starts healthy, so a fresh router serves before its first probe round."""

    __slots__ = ("healthy_after", "unhealthy_after", "_state", "_failures", "_probe_successes", "_last_failure")

    def __init__(self, healthy_after: int, unhealthy_after: int) -> None:
        if healthy_after < 1 or unhealthy_after < 1:
            raise ValueError(f"healthy_after and unhealthy_after must be >= 1, got {healthy_after}, "
                             f"{unhealthy_after}")
        self.healthy_after = healthy_after
        self.unhealthy_after = unhealthy_after
        self._state = HealthState.HEALTHY
        self._failures = 0
        self._probe_successes = 0
        self._last_failure = ""

    @property
    def state(self) -> HealthState:
        return self._state

    @property
    def healthy(self) -> bool:
        return self._state is HealthState.HEALTHY

    @property
    def reason(self) -> str | None:
        """Why the deployment is unhealthy: its latest failure, probe or live. None while healthy."""
        return None if self.healthy else self._last_failure

    def record_probe(self, failure: str | None) -> HealthChange | None:
        """A probe passed (`failure` None) or failed, saying why."""
        if failure is not None:
            return self._failure(f"probe: {failure}")
        if self._state is HealthState.HEALTHY:
            self._failures = 0
            return None
        self._probe_successes += 1
        if self._probe_successes >= self.healthy_after:
            return self.fire(HealthEvent.PROBES_PASSED, f"{self._probe_successes} consecutive probes ok")
        return None

    def record_live_failure(self, failure: str) -> HealthChange | None:
        """A live request could not reach the backend (connect error, reset, timeout), or its answer says the
        deployment is misconfigured (a wrong key, model or url): `failure` says which."""
        return self._failure(f"live: {failure}")

    def record_live_success(self) -> None:
        # Only resets the failure run: an unhealthy deployment rejoins through probes alone.
        if self._state is HealthState.HEALTHY:
            self._failures = 0

    def _failure(self, failure: str) -> HealthChange | None:
        self._probe_successes = 0
        self._last_failure = failure
        if self._state is HealthState.UNHEALTHY:
            return None
        self._failures += 1
        if self._failures >= self.unhealthy_after:
            reason = f"{self._failures} consecutive failures, last {failure}"
            return self.fire(HealthEvent.FAILURES_REACHED, reason)
        return None

    def fire(self, event: HealthEvent, reason: str) -> HealthChange:
        """Applies one event from `TRANSITIONS`; raises HealthProtocolError (changing nothing) otherwise."""
        target = TRANSITIONS[self._state].get(event)
        if target is None:
            raise HealthProtocolError(
                f"health event {event.value!r} is illegal in state {self._state.value!r}"
            )
        change = HealthChange(self._state, target, reason)
        self._state = target
        self._failures = 0
        self._probe_successes = 0
        return change
