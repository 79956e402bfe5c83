"""Which deployment a request tries next and when it stops, as a pure state machine over what happened so
far: a candidate tried, passed over because it was full (busy), or failed before any byte reached the client.
The forwarder asks it; it never touches a socket or a clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from data_plane.policies.exclusion import Exclusion


class Ending(StrEnum):
    BUSY = "busy"  # nothing was tried only because deployments were full or rate limited: worth queueing
    FAILED = "failed"  # deployments were tried and every attempt failed
    NOTHING_ELIGIBLE = "nothing eligible"  # nothing could be tried at all


@dataclass(slots=True)
class AttemptPlan:
    max_attempts: int
    deadline: float  # monotonic seconds
    tried: list[str] = field(default_factory=list)
    busy: bool = False
    last_failure: str = "no eligible deployment"

    def saw_decision(self, saturated: bool) -> None:
        """A model's decision was taken; `saturated` when some deployment was out only for being busy."""
        self.busy = self.busy or saturated

    def may_attempt(self, now: float) -> bool:
        return len(self.tried) < self.max_attempts and now < self.deadline

    def blocked(self, deployment: str, exclusion: Exclusion) -> None:
        """Passed over at the moment of sending (full or rate limited since the decision)."""
        self.busy = self.busy or exclusion.kind.is_saturation
        self.last_failure = f"{deployment} {exclusion}"

    def attempt(self, deployment: str) -> int:
        """Records an attempt; returns its number (1 for the first)."""
        self.tried.append(deployment)
        return len(self.tried)

    def failed(self, deployment: str, reason: str) -> None:
        self.last_failure = f"{deployment}: {reason}"

    def fallback_note(self) -> str:
        """The x-meridian-reason of an attempt that is not the decision's first pick."""
        return f"fallback after {', '.join(self.tried[:-1])}" if len(self.tried) > 1 else "fallback"

    @property
    def ending(self) -> Ending:
        if self.tried:
            return Ending.FAILED
        return Ending.BUSY if self.busy else Ending.NOTHING_ELIGIBLE

    def summary(self) -> str:
        if self.tried:
            return f"tried {', '.join(self.tried)}; last error: {self.last_failure}"
        return self.last_failure
