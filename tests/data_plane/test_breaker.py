"""The circuit breaker driven directly, as h11 tests its state machine: scripted scenarios, every illegal
event, and random event sequences that must keep every invariant."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.breaker import (
    TRANSITIONS,
    BreakerEvent,
    BreakerProtocolError,
    BreakerState,
    CircuitBreaker,
    Transition,
)
from data_plane.table import BreakerSettings

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
# The window's rules alone; the failures-in-a-row rule has its own tests.
SETTINGS = BreakerSettings(error_rate_threshold=0.5, p95_threshold_ms=1000.0, min_requests=5,
                           open_duration_s=5.0, window_s=10.0, consecutive_failures=0)


def _tripped(now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker("a", SETTINGS)
    for _ in range(5):
        breaker.record(now, ok=False, latency_ms=10.0)
    assert breaker.state is OPEN
    return breaker


@pytest.mark.parametrize(
    ("outcomes", "tripped_by"),
    [
        ([(True, 10.0)] * 10, None),
        ([(False, 10.0)] * 4, None),  # under min_requests
        ([(False, 10.0)] * 2 + [(True, 10.0)] * 3, None),  # 0.40 is not over 0.50
        ([(False, 10.0)] * 3 + [(True, 10.0)] * 2, "error_rate=0.60>0.50 over 5 requests"),
        ([(False, 10.0)] * 5, "error_rate=1.00>0.50 over 5 requests"),
        ([(True, 10.0)] * 19 + [(True, 1500.0)], None),  # 1 of 20 slower: p95 is still under
        ([(True, 10.0)] * 19 + [(True, 1500.0)] * 2, "p95>1000ms over 21 requests (2 slower)"),
        ([(True, 2000.0)] * 5, "p95>1000ms over 5 requests (5 slower)"),
    ],
)
def test_closed_breaker_trips_on_error_rate_or_p95(outcomes: list[tuple[bool, float]],
                                                  tripped_by: str | None) -> None:
    breaker = CircuitBreaker("a", SETTINGS)
    transitions = [t for ok, ms in outcomes if (t := breaker.record(1.0, ok=ok, latency_ms=ms))]
    if tripped_by is None:
        assert transitions == [] and breaker.state is CLOSED
    else:
        assert transitions == [Transition("a", CLOSED, OPEN, tripped_by)]
        assert breaker.admit(1.0) == (False, None)


def test_p95_threshold_zero_is_off() -> None:
    breaker = CircuitBreaker("a", BreakerSettings(p95_threshold_ms=0.0))
    for _ in range(50):
        assert breaker.record(1.0, ok=True, latency_ms=60_000.0) is None


def test_outcomes_older_than_the_window_do_not_count() -> None:
    breaker = CircuitBreaker("a", SETTINGS)
    for _ in range(4):
        breaker.record(0.0, ok=False, latency_ms=10.0)
    assert breaker.record(11.0, ok=False, latency_ms=10.0) is None  # the four failures left the window
    assert breaker.state is CLOSED


def test_open_reports_half_open_after_its_duration_without_moving() -> None:
    breaker = _tripped(now=0.0)
    assert breaker.state_at(4.9) is OPEN
    assert breaker.state_at(5.0) is HALF_OPEN
    assert breaker.state is OPEN
    assert breaker.admit(4.9) == (False, None)


def test_half_open_admits_one_trial_and_closes_on_success_with_a_fresh_window() -> None:
    breaker = _tripped(now=0.0)
    admitted, transition = breaker.admit(5.0)
    assert admitted
    assert transition == Transition("a", OPEN, HALF_OPEN, "open for 5.0s; one trial admitted")
    assert breaker.admit(5.1) == (False, None)
    assert breaker.trial_outstanding(5.1)
    closed = Transition("a", HALF_OPEN, CLOSED, "trial ok in 200ms")
    assert breaker.record(5.2, ok=True, latency_ms=200.0) == closed
    assert breaker.admit(5.3) == (True, None)
    # The five failures before it opened are forgotten: four more do not reach a decision.
    for _ in range(4):
        assert breaker.record(5.4, ok=False, latency_ms=10.0) is None


@pytest.mark.parametrize(
    ("ok", "latency_ms", "reason"),
    [(False, 30.0, "trial failed after 30ms"), (True, 2500.0, "trial slow 2500ms>1000ms")],
)
def test_failed_or_slow_trial_reopens_for_a_full_duration(ok: bool, latency_ms: float, reason: str) -> None:
    breaker = _tripped(now=0.0)
    breaker.admit(6.0)
    assert breaker.record(6.5, ok=ok, latency_ms=latency_ms) == Transition("a", HALF_OPEN, OPEN, reason)
    assert breaker.state_at(11.4) is OPEN
    assert breaker.admit(11.4) == (False, None)
    assert breaker.admit(11.5)[0]


def test_a_lost_trial_frees_its_slot_on_abandon_or_after_the_trial_timeout() -> None:
    breaker = CircuitBreaker("a", SETTINGS, trial_timeout_s=30.0)
    for _ in range(5):
        breaker.record(0.0, ok=False, latency_ms=10.0)
    assert breaker.admit(5.0)[0]
    breaker.abandon(6.0)
    assert breaker.admit(6.0) == (True, None)
    assert breaker.admit(35.9) == (False, None)
    assert breaker.admit(36.0) == (True, None)


def test_records_while_open_are_ignored() -> None:
    breaker = _tripped(now=0.0)
    assert breaker.record(1.0, ok=True, latency_ms=10.0) is None
    assert breaker.record(9.0, ok=True, latency_ms=10.0) is None  # elapsed, but no trial was admitted
    assert breaker.state is OPEN


ILLEGAL = [(state, event) for state in BreakerState for event in BreakerEvent
           if event not in TRANSITIONS[state]]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_illegal_events_raise_and_change_nothing(state: BreakerState, event: BreakerEvent) -> None:
    breaker = CircuitBreaker("a", SETTINGS)
    paths = {CLOSED: [], OPEN: [BreakerEvent.TRIP], HALF_OPEN: [BreakerEvent.TRIP, BreakerEvent.COOL_DOWN]}
    for step in paths[state]:
        breaker.fire(step, 0.0, "setup")
    assert breaker.state is state
    message = f"event '{event.value}' is illegal in state '{state.value}'"
    with pytest.raises(BreakerProtocolError, match=message):
        breaker.fire(event, 1.0, "illegal")
    assert breaker.state is state
    assert breaker.state_at(0.5) is state


def test_every_state_has_a_way_out() -> None:
    assert set(TRANSITIONS) == set(BreakerState)
    assert all(TRANSITIONS[state] for state in BreakerState)


@dataclass(frozen=True)
class Step:
    advance_s: float
    action: str  # admit, ok, fail, slow, abandon


steps = st.builds(Step, st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5, 6.0, 12.0, 40.0]),
                  st.sampled_from(["admit", "admit", "ok", "fail", "fail", "slow", "abandon"]))
legal_pairs = {(state, target) for state, events in TRANSITIONS.items() for target in events.values()}


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, max_size=80))
def test_random_event_sequences_keep_every_invariant(script: list[Step]) -> None:
    breaker = CircuitBreaker("a", SETTINGS, trial_timeout_s=30.0)
    now = 0.0
    trial_at: float | None = None  # when the outstanding half-open trial was admitted
    opened_at = 0.0
    for step in script:
        now += step.advance_s
        before = breaker.state
        assert breaker.state_at(now) in BreakerState
        transition: Transition | None
        if step.action == "admit":
            admitted, transition = breaker.admit(now)
            if before is CLOSED:
                assert admitted and transition is None
            elif before is OPEN:
                assert admitted == (now - opened_at >= SETTINGS.open_duration_s)
            else:
                # Trial exclusivity: a second trial only once the first is answered, abandoned or lost.
                assert admitted == (trial_at is None or now - trial_at >= 30.0)
            if admitted and breaker.state is HALF_OPEN:
                trial_at = now
        elif step.action == "abandon":
            breaker.abandon(now)
            transition = None
            trial_at = None
        else:
            latency_ms = 2000.0 if step.action == "slow" else 10.0
            transition = breaker.record(now, ok=step.action != "fail", latency_ms=latency_ms)
            if before is OPEN:
                assert transition is None
            if before is HALF_OPEN:
                assert transition is not None
                assert transition.to_state is (CLOSED if step.action == "ok" else OPEN)
        if transition is not None:
            assert transition.from_state is before and transition.to_state is breaker.state
            assert (before, breaker.state) in legal_pairs
            assert transition.reason
        if breaker.state is OPEN and before is not OPEN:
            opened_at = now
        if breaker.state is not HALF_OPEN:
            trial_at = None
        assert breaker.trial_outstanding(now) == (trial_at is not None and now - trial_at < 30.0)


def test_failures_in_a_row_trip_a_breaker_whose_window_is_mostly_successes() -> None:
    breaker = CircuitBreaker("a", BreakerSettings(error_rate_threshold=0.5, min_requests=5, consecutive_failures=3))
    for _ in range(40):
        assert breaker.record(1.0, ok=True, latency_ms=10.0) is None
    assert breaker.record(2.0, ok=False, latency_ms=10.0) is None
    assert breaker.record(2.0, ok=True, latency_ms=10.0) is None  # a success resets the count
    assert breaker.record(2.1, ok=False, latency_ms=10.0) is None
    assert breaker.record(2.2, ok=False, latency_ms=10.0) is None
    assert breaker.record(2.3, ok=False, latency_ms=10.0) == Transition(
        "a", CLOSED, OPEN, "3 failed or slow answers in a row")


def test_failures_in_a_row_can_be_turned_off() -> None:
    breaker = CircuitBreaker("a", BreakerSettings(error_rate_threshold=0.9, min_requests=5, consecutive_failures=0))
    for _ in range(40):
        breaker.record(1.0, ok=True, latency_ms=10.0)
    assert all(breaker.record(2.0, ok=False, latency_ms=10.0) is None for _ in range(10))
    assert breaker.state is CLOSED


def test_slow_answers_in_a_row_count_as_failures() -> None:
    settings = BreakerSettings(p95_threshold_ms=100.0, min_requests=5, consecutive_failures=2)
    breaker = CircuitBreaker("a", settings)
    for _ in range(40):
        breaker.record(1.0, ok=True, latency_ms=10.0)
    assert breaker.record(2.0, ok=True, latency_ms=900.0) is None
    assert breaker.record(2.1, ok=True, latency_ms=900.0) == Transition(
        "a", CLOSED, OPEN, "2 failed or slow answers in a row")
