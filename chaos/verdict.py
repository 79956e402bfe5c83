"""What a check is and what it returns: a pure function of a Timeline to a named verdict with its detail. Kept
apart from scenario.py, which names the StackHandle that faults act through, so that the checks stay pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.timeline import Timeline


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
