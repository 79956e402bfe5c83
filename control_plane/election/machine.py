"""The role one election candidate plays, as a pure state machine: every legal transition is in one table, and
an illegal trigger raises IllegalTransition and leaves the role and epoch as they were. No I/O; the campaign
feeds it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    LOST = "lost"


class Trigger(enum.Enum):
    CAMPAIGN = "campaign"
    WON = "won"
    CANCELLED = "cancelled"
    RESIGNED = "resigned"
    DEPOSED = "deposed"
    SESSION_DONE = "session_done"


_TRANSITIONS: dict[tuple[Role, Trigger], Role] = {
    (Role.FOLLOWER, Trigger.CAMPAIGN): Role.CANDIDATE,
    (Role.CANDIDATE, Trigger.WON): Role.LEADER,
    (Role.CANDIDATE, Trigger.CANCELLED): Role.FOLLOWER,
    (Role.LEADER, Trigger.RESIGNED): Role.FOLLOWER,
    (Role.LEADER, Trigger.DEPOSED): Role.FOLLOWER,
    (Role.FOLLOWER, Trigger.SESSION_DONE): Role.LOST,
    (Role.CANDIDATE, Trigger.SESSION_DONE): Role.LOST,
    (Role.LEADER, Trigger.SESSION_DONE): Role.LOST,
}


class IllegalTransition(RuntimeError):
    """A trigger that the current role does not accept; the machine is left as it was."""


@dataclass(frozen=True, slots=True)
class Transition:
    before: Role
    trigger: Trigger
    after: Role
    epoch: int | None
    reason: str

    @property
    def lost_leadership(self) -> bool:
        return self.before is Role.LEADER and self.after is not Role.LEADER


class ElectionMachine:
    """Role and epoch of one candidate. LOST is terminal: a lost session cannot be campaigned with again."""

    __slots__ = ("_role", "_epoch")

    def __init__(self) -> None:
        self._role = Role.FOLLOWER
        self._epoch: int | None = None

    @property
    def role(self) -> Role:
        return self._role

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def apply(self, trigger: Trigger, *, epoch: int | None = None, reason: str = "") -> Transition:
        after = _TRANSITIONS.get((self._role, trigger))
        if after is None:
            raise IllegalTransition(f"{trigger.value} is not accepted in role {self._role.value}")
        if after is Role.LEADER and (epoch is None or epoch <= 0):
            raise IllegalTransition(f"{trigger.value} needs the leader key's create-revision, got {epoch!r}")
        kept_epoch = epoch if after is Role.LEADER else self._epoch
        transition = Transition(self._role, trigger, after, kept_epoch, reason)
        self._role = after
        self._epoch = epoch if after is Role.LEADER else None
        return transition
