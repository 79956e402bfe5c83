"""A chaos scenario as a small declarative value: what it breaks (inject), how it puts it back (remove), and
what must hold, as pure checks over the recorded Timeline."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.timeline import Timeline

if TYPE_CHECKING:
    from chaos.stack_handle import StackHandle


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    detail: str

    def verdict_line(self, scenario: str) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {scenario}: {self.name} — {self.detail}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


Check = Callable[[Timeline], CheckResult]
Inject = Callable[["StackHandle", Timeline], Mapping[str, Any]]
"""Breaks something; gets the baseline recorded so far and returns the facts its checks need. Blocking: the
runner calls it in a thread. Every change goes through the handle, which records how to undo it."""
Remove = Callable[["StackHandle"], Sequence[str]]
"""Puts the stack back; returns what could not be undone."""


def restore_all(handle: StackHandle) -> Sequence[str]:
    return handle.restore()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    injects: str
    """One line: the fault, for `meridian chaos list` and the report."""
    inject: Inject
    checks: tuple[Check, ...]
    remove: Remove = restore_all
    min_fault_s: float = 0.0
    min_recovery_s: float = 0.0
    """Phases this scenario needs whatever `--duration` says (a lease must lapse, an election must finish)."""
