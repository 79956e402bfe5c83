"""A chaos scenario as a small declarative value: what it breaks (inject), how it puts it back (remove), and
what must hold, as pure checks over the recorded Timeline; and the settings and the result of one run of it."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaos.verdict import Check, CheckResult
from harness.timeline import Timeline
from meridian_common.workload import NO_OVERRIDES, WorkloadOverrides

if TYPE_CHECKING:
    from harness.stack_handle import StackHandle


Inject = Callable[["StackHandle", Timeline], Mapping[str, Any]]
"""Breaks something; gets the baseline recorded so far and returns the facts its checks need. Blocking: the
runner calls it in a thread. Every change goes through the handle, which records how to undo it."""
Remove = Callable[["StackHandle"], Sequence[str]]
"""Puts the stack back; returns what could not be undone."""


def restore_all(handle: StackHandle) -> Sequence[str]:
    return handle.restore()


class StackFeature(enum.Enum):
    """What a scenario may need of the stack; the value says what it is and how to start a stack that has it."""

    ETCD_CLUSTER = "an etcd cluster of 3 members or more (`meridian up --etcd-members 3`)"
    REDIS_SENTINEL = "Redis Sentinel (`meridian up --redis-sentinel`)"
    PROXIED_REDIS = "one Redis behind Toxiproxy (`meridian up` without --redis-sentinel)"


DEFAULT_FEATURES = frozenset({StackFeature.PROXIED_REDIS})
"""What a plain `meridian up` gives."""


def stack_features(stack: Mapping[str, Any]) -> frozenset[StackFeature]:
    features = set()
    if len(stack.get("etcd", {}).get("members", [])) >= 3:
        features.add(StackFeature.ETCD_CLUSTER)
    features.add(StackFeature.REDIS_SENTINEL if stack.get("redis", {}).get("sentinels") else StackFeature.PROXIED_REDIS)
    return frozenset(features)


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
    needs: frozenset[StackFeature] = frozenset()

    def unmet_needs(self, stack: Mapping[str, Any]) -> str | None:
        """Why this scenario cannot run against `stack` (and what to start instead), or None when it can."""
        missing = sorted(need.value for need in self.needs - stack_features(stack))
        return f"{self.name} needs {' and '.join(missing)}" if missing else None


@dataclass(frozen=True, slots=True)
class RunSettings:
    baseline_s: float = 5.0
    fault_s: float = 8.0
    recovery_s: float = 6.0
    probe_interval_s: float = 0.15
    workers_per_client: int = 6
    steady_timeout_s: float = 20.0
    reports_dir: Path | None = None
    """Default: `<stack directory>/reports`."""
    write_report: bool = True
    workload: WorkloadOverrides = NO_OVERRIDES
    """Command-line changes to every client's workload."""

    @classmethod
    def for_fault(cls, fault_s: float, **overrides: Any) -> RunSettings:
        """A fault window of `fault_s`, with a baseline and a recovery in proportion (at least 2.5 s and 3 s)."""
        return cls(baseline_s=max(2.5, fault_s * 0.6), fault_s=fault_s, recovery_s=max(3.0, fault_s * 0.8),
                   **overrides)


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    checks: tuple[CheckResult, ...]
    timeline: Timeline
    error: str | None = None
    """Why the fault could not be injected (the checks are then not meaningful)."""
    restore_failures: tuple[str, ...] = ()
    report_dir: Path | None = None
    steady: bool = True
    settings: RunSettings = field(default_factory=RunSettings)

    @property
    def passed(self) -> bool:
        return self.error is None and not self.restore_failures and all(c.passed for c in self.checks)

    def verdict_lines(self) -> list[str]:
        name = self.scenario.name
        lines = [c.verdict_line(name) for c in self.checks]
        if self.error:
            lines.append(f"FAIL  {name}: fault injected — {self.error}")
        if self.restore_failures:
            lines.append(f"FAIL  {name}: stack restored — {'; '.join(self.restore_failures)}")
        return lines
