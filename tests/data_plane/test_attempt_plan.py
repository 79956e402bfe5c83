"""The attempt plan driven directly: what to try next, when to stop, and whether a request that tried
nothing was busy (worth queueing) or had nothing eligible."""

from __future__ import annotations

import pytest

from data_plane.policies.exclusion import Exclusion, ExclusionKind
from data_plane.serving.attempt_plan import AttemptPlan, Ending

FULL = Exclusion(ExclusionKind.AT_CAPACITY, "at capacity 4/4")
LIMITED = Exclusion(ExclusionKind.RATE_LIMITED, "rate limited: rpm 3 reached")


def test_a_fresh_plan_has_nothing_eligible() -> None:
    plan = AttemptPlan(max_attempts=3, deadline=10.0)
    assert plan.ending is Ending.NOTHING_ELIGIBLE and plan.summary() == "no eligible deployment"


@pytest.mark.parametrize(
    ("script", "ending", "summary"),
    [
        ([("saturated", True)], Ending.BUSY, "no eligible deployment"),
        ([("blocked", "a", FULL)], Ending.BUSY, "a at capacity 4/4"),
        ([("blocked", "a", LIMITED)], Ending.BUSY, "a rate limited: rpm 3 reached"),
        ([("blocked", "a", FULL), ("attempt", "b"), ("failed", "b", "http_500 boom")], Ending.FAILED,
         "tried b; last error: b: http_500 boom"),
        ([("attempt", "a"), ("failed", "a", "ConnectionRefused"), ("attempt", "b"), ("failed", "b", "http_503")],
         Ending.FAILED, "tried a, b; last error: b: http_503"),
        ([("saturated", False)], Ending.NOTHING_ELIGIBLE, "no eligible deployment"),
    ],
)
def test_endings(script: list[tuple[object, ...]], ending: Ending, summary: str) -> None:
    plan = AttemptPlan(max_attempts=3, deadline=10.0)
    for step, *args in script:
        if step == "saturated":
            plan.saw_decision(bool(args[0]))
        elif step == "blocked":
            plan.blocked(str(args[0]), args[1])  # type: ignore[arg-type]
        elif step == "attempt":
            plan.attempt(str(args[0]))
        else:
            plan.failed(str(args[0]), str(args[1]))
    assert plan.ending is ending and plan.summary() == summary


def test_attempts_stop_at_the_limit_or_the_deadline() -> None:
    plan = AttemptPlan(max_attempts=2, deadline=10.0)
    assert plan.may_attempt(0.0)
    assert plan.attempt("a") == 1 and plan.may_attempt(0.0)
    assert plan.attempt("b") == 2 and not plan.may_attempt(0.0)
    assert not AttemptPlan(max_attempts=5, deadline=10.0).may_attempt(10.0)


def test_the_reason_of_a_fallback_names_what_failed_before() -> None:
    plan = AttemptPlan(max_attempts=3, deadline=10.0)
    plan.attempt("a")
    assert plan.fallback_note() == "fallback"  # the pick was passed over, not tried
    plan.attempt("b")
    assert plan.fallback_note() == "fallback after a"
