"""The circuit breaker driven directly, as h11 tests its state machine: scripted scenarios, every illegal
event, random event sequences that must keep every invariant, the TTFT/TPOT judgement of an answer and the
ejection cap."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.deployments.breaker import (
    TRANSITIONS,
    BreakerEvent,
    BreakerProtocolError,
    BreakerState,
    CircuitBreaker,
    Transition,
    TripHeld,
    ejection_limit,
)
from data_plane.serving.answer_timing import AnswerTiming, slowness, whole_answer_timing
from meridian_common.catalog import BreakerConfig

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
# The window's rules alone; the failures-in-a-row rule has its own tests.
SETTINGS = BreakerConfig(error_rate_threshold=0.5, ttft_p95_threshold_ms=1000.0, tpot_p95_threshold_ms=50.0,
                           min_requests=5, open_duration_s=5.0, window_s=10.0, consecutive_failures=0)
FAST = AnswerTiming(ttft_ms=80.0, tpot_ms=6.0)
SLOW_TTFT = AnswerTiming(ttft_ms=1500.0, tpot_ms=6.0)
SLOW_TPOT = AnswerTiming(ttft_ms=80.0, tpot_ms=120.0)


def _slow(timing: AnswerTiming, settings: BreakerConfig = SETTINGS, rtt_ms: float = 0.0) -> str | None:
    return slowness(timing, ttft_threshold_ms=settings.ttft_p95_threshold_ms,
                    tpot_threshold_ms=settings.tpot_p95_threshold_ms, rtt_ms=rtt_ms)


def _answer(breaker: CircuitBreaker, now: float, timing: AnswerTiming = FAST,
            may_open: bool = True) -> Transition | TripHeld | None:
    return breaker.record(now, ok=True, slow=_slow(timing, breaker.settings), may_open=may_open)


def _tripped(now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker("a", SETTINGS)
    for _ in range(5):
        breaker.record(now, ok=False)
    assert breaker.state is OPEN
    return breaker


OK, FAIL = (True, FAST), (False, FAST)


@pytest.mark.parametrize(
    ("outcomes", "tripped_by"),
    [
        ([OK] * 10, None),
        ([FAIL] * 4, None),  # under min_requests
        ([FAIL] * 2 + [OK] * 3, None),  # 0.40 is not over 0.50
        ([FAIL] * 3 + [OK] * 2, "error_rate=0.60>0.50 over 5 requests"),
        ([FAIL] * 5, "error_rate=1.00>0.50 over 5 requests"),
        ([OK] * 19 + [(True, SLOW_TTFT)], None),  # 1 of 20 slow: the p95 is still under
        ([OK] * 19 + [(True, SLOW_TTFT)] * 2,
         "ttft or tpot p95 over threshold: 2 of 21 answers slow, last ttft 1500ms>1000ms"),
        ([(True, SLOW_TPOT)] * 5,
         "ttft or tpot p95 over threshold: 5 of 5 answers slow, last tpot 120.0ms>50ms"),
    ],
)
def test_closed_breaker_trips_on_error_rate_or_ttft_or_tpot_p95(outcomes: list[tuple[bool, AnswerTiming]],
                                                               tripped_by: str | None) -> None:
    breaker = CircuitBreaker("a", SETTINGS)
    transitions = [t for ok, timing in outcomes
                   if (t := breaker.record(1.0, ok=ok, slow=_slow(timing) if ok else None))]
    if tripped_by is None:
        assert transitions == [] and breaker.state is CLOSED
    else:
        assert transitions == [Transition("a", CLOSED, OPEN, tripped_by)]
        assert breaker.admit(1.0) == (False, None)


@pytest.mark.parametrize("tokens", [16, 200, 800, 4000])
def test_a_long_answer_from_a_healthy_backend_never_trips(tokens: int) -> None:
    """The bug this breaker was rebuilt for: whole-answer time grows with the answer, TTFT and TPOT do not."""
    settings = BreakerConfig(ttft_p95_threshold_ms=500.0, tpot_p95_threshold_ms=25.0, min_requests=3,
                               consecutive_failures=2)
    breaker = CircuitBreaker("a", settings)
    # A whole (non-streamed) answer: only its total time is seen, 24 s for 4000 tokens.
    timing = whole_answer_timing(60.0 + 6.0 * (tokens - 1), tokens, ttft_estimate_ms=60.0)
    assert timing == AnswerTiming(60.0, pytest.approx(6.0))
    for i in range(50):
        assert _answer(breaker, 1.0 + i * 0.1, timing) is None
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    ("timing", "rtt_ms", "reason"),
    [
        (AnswerTiming(400.0, 10.0), 0.0, None),
        (AnswerTiming(600.0, 10.0), 0.0, "ttft 600ms>500ms"),
        (AnswerTiming(600.0, 10.0), 200.0, None),  # 200 ms of it is the round trip to a remote region
        (AnswerTiming(100.0, 30.0), 0.0, "tpot 30.0ms>25ms"),
        (AnswerTiming(100.0, None), 0.0, None),  # a one-token answer has no TPOT
    ],
)
def test_slowness_judges_ttft_without_the_rtt_and_tpot(timing: AnswerTiming, rtt_ms: float,
                                                       reason: str | None) -> None:
    settings = BreakerConfig(ttft_p95_threshold_ms=500.0, tpot_p95_threshold_ms=25.0)
    assert _slow(timing, settings, rtt_ms) == reason


def test_thresholds_of_zero_are_off() -> None:
    breaker = CircuitBreaker("a", BreakerConfig(ttft_p95_threshold_ms=0.0, tpot_p95_threshold_ms=0.0))
    for _ in range(50):
        assert _answer(breaker, 1.0, AnswerTiming(60_000.0, 5_000.0)) is None


def test_outcomes_older_than_the_window_do_not_count() -> None:
    breaker = CircuitBreaker("a", SETTINGS)
    for _ in range(4):
        breaker.record(0.0, ok=False)
    assert breaker.record(11.0, ok=False) is None  # the four failures left the window
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
    closed = Transition("a", HALF_OPEN, CLOSED, "trial answered in time")
    assert _answer(breaker, 5.2) == closed
    assert breaker.admit(5.3) == (True, None)
    # The five failures before it opened are forgotten: four more do not reach a decision.
    for _ in range(4):
        assert breaker.record(5.4, ok=False) is None


@pytest.mark.parametrize(
    ("ok", "timing", "reason"),
    [(False, FAST, "trial failed"), (True, SLOW_TTFT, "trial slow: ttft 1500ms>1000ms"),
     (True, SLOW_TPOT, "trial slow: tpot 120.0ms>50ms")],
)
def test_failed_or_slow_trial_reopens_for_a_full_duration(ok: bool, timing: AnswerTiming, reason: str) -> None:
    breaker = _tripped(now=0.0)
    breaker.admit(6.0)
    assert breaker.record(6.5, ok=ok, slow=_slow(timing) if ok else None) == Transition("a", HALF_OPEN, OPEN,
                                                                                        reason)
    assert breaker.state_at(11.4) is OPEN
    assert breaker.admit(11.4) == (False, None)
    assert breaker.admit(11.5)[0]


def test_a_lost_trial_frees_its_slot_on_abandon_or_after_the_trial_timeout() -> None:
    breaker = CircuitBreaker("a", SETTINGS, trial_timeout_s=30.0)
    for _ in range(5):
        breaker.record(0.0, ok=False)
    assert breaker.admit(5.0)[0]
    breaker.abandon(5.0)
    assert breaker.admit(6.0) == (True, None)
    assert breaker.admit(35.9) == (False, None)
    assert breaker.admit(36.0) == (True, None)


@pytest.mark.parametrize(
    ("abandoned_started", "trial_freed"),
    [
        (5.0, True),  # the trial itself
        (5.2, True),  # a panic pick sent alongside the trial
        (0.5, False),  # a straggler admitted while closed, before the breaker opened
        (4.0, False),  # one sent while open (a panic pick) before the trial
        (-1.0, False),
    ],
)
def test_in_half_open_only_abandoning_the_trial_frees_its_slot(abandoned_started: float,
                                                              trial_freed: bool) -> None:
    breaker = _tripped(now=0.0)
    assert breaker.admit(5.0)[0]  # the trial, sent at 5.0
    breaker.abandon(abandoned_started)
    assert breaker.trial_outstanding(6.0) is not trial_freed
    assert breaker.admit(6.0) == (trial_freed, None)


def test_abandoning_a_trial_given_up_on_leaves_the_next_trial_outstanding() -> None:
    breaker = CircuitBreaker("a", SETTINGS, trial_timeout_s=10.0)
    for _ in range(5):
        breaker.record(0.0, ok=False)
    assert breaker.admit(5.0)[0]  # lost: its outcome never comes in time
    assert breaker.admit(15.0)[0]  # the next trial
    breaker.abandon(5.0)  # the first one's client finally leaves
    assert breaker.admit(16.0) == (False, None)
    breaker.abandon(15.0)
    assert breaker.admit(16.0) == (True, None)


@pytest.mark.parametrize(("started", "trial_freed"), [(5.0, True), (0.5, False)])
def test_a_whole_answer_frees_the_trial_slot_only_when_it_was_the_trial(started: float, trial_freed: bool) -> None:
    """With a TTFT threshold a whole answer is no verdict; only the trial's own frees the slot for one that can
    tell."""
    breaker = _tripped(now=0.0)
    assert breaker.admit(5.0)[0]
    assert breaker.record(6.0, ok=True, started=started, ttft_measured=False) is None
    assert breaker.state is HALF_OPEN
    assert breaker.admit(6.0) == (trial_freed, None)


def test_records_while_open_are_ignored() -> None:
    breaker = _tripped(now=0.0)
    assert _answer(breaker, 1.0) is None
    assert _answer(breaker, 9.0) is None  # elapsed, but no trial was admitted
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
    action: str  # admit, ok, fail, slow, abandon (the last admitted request), abandon-straggler


steps = st.builds(Step, st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5, 6.0, 12.0, 40.0]),
                  st.sampled_from(["admit", "admit", "ok", "fail", "fail", "slow", "abandon",
                                   "abandon-straggler"]))
legal_pairs = {(state, target) for state, events in TRANSITIONS.items() for target in events.values()}


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, max_size=80))
def test_random_event_sequences_keep_every_invariant(script: list[Step]) -> None:
    breaker = CircuitBreaker("a", SETTINGS, trial_timeout_s=30.0)
    now = 0.0
    trial_at: float | None = None  # when the outstanding half-open trial was admitted
    last_admitted: float | None = None
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
            if admitted:
                last_admitted = now
            if admitted and breaker.state is HALF_OPEN:
                trial_at = now
        elif step.action == "abandon":
            if last_admitted is not None:
                breaker.abandon(last_admitted)
                if last_admitted == trial_at:
                    trial_at = None
            transition = None
        elif step.action == "abandon-straggler":
            breaker.abandon(-1.0)  # sent before anything here: never the trial
            transition = None
        else:
            change = breaker.record(now, ok=step.action != "fail", slow="slow" if step.action == "slow" else None)
            assert not isinstance(change, TripHeld)
            transition = change
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
    breaker = CircuitBreaker("a", BreakerConfig(error_rate_threshold=0.5, min_requests=5, consecutive_failures=3))
    for _ in range(40):
        assert _answer(breaker, 1.0) is None
    assert breaker.record(2.0, ok=False) is None
    assert _answer(breaker, 2.0) is None  # a success resets the count
    assert breaker.record(2.1, ok=False) is None
    assert breaker.record(2.2, ok=False) is None
    assert breaker.record(2.3, ok=False) == Transition("a", CLOSED, OPEN, "3 failed or slow answers in a row")


def test_failures_in_a_row_can_be_turned_off() -> None:
    breaker = CircuitBreaker("a", BreakerConfig(error_rate_threshold=0.9, min_requests=5, consecutive_failures=0))
    for _ in range(40):
        _answer(breaker, 1.0)
    assert all(breaker.record(2.0, ok=False) is None for _ in range(10))
    assert breaker.state is CLOSED


def test_slow_answers_in_a_row_count_as_failures() -> None:
    settings = BreakerConfig(tpot_p95_threshold_ms=20.0, min_requests=5, consecutive_failures=2)
    breaker = CircuitBreaker("a", settings)
    for _ in range(40):
        _answer(breaker, 1.0)
    assert _answer(breaker, 2.0, SLOW_TPOT) is None
    assert _answer(breaker, 2.1, SLOW_TPOT) == Transition(
        "a", CLOSED, OPEN, "2 failed or slow answers in a row, last tpot 120.0ms>20ms")


@pytest.mark.parametrize(
    ("deployments", "percent", "limit"),
    [(1, 50.0, 1), (2, 50.0, 1), (3, 50.0, 1), (4, 50.0, 2), (6, 50.0, 3), (6, 10.0, 1), (6, 0.0, 1),
     (6, 100.0, 6), (10, 33.0, 3)],
)
def test_ejection_limit_is_the_percentage_rounded_down_and_at_least_one(deployments: int, percent: float,
                                                                       limit: int) -> None:
    assert ejection_limit(deployments, percent) == limit


def test_a_trip_over_the_ejection_cap_is_held_and_retried_on_the_next_answer() -> None:
    breaker = CircuitBreaker("a", BreakerConfig(min_requests=3, consecutive_failures=2))
    assert breaker.record(1.0, ok=False, may_open=False) is None
    held = breaker.record(1.1, ok=False, may_open=False)
    assert held == TripHeld("a", "2 failed or slow answers in a row") and breaker.state is CLOSED
    assert breaker.admit(1.2) == (True, None)
    assert breaker.record(1.3, ok=False, may_open=True) == Transition(
        "a", CLOSED, OPEN, "error_rate=1.00>0.50 over 3 requests")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60))
def test_a_breaker_that_may_not_open_never_leaves_closed(outcomes: list[tuple[bool, bool]]) -> None:
    breaker = CircuitBreaker("a", BreakerConfig(min_requests=1, consecutive_failures=1))
    for index, (ok, slow) in enumerate(outcomes):
        change = breaker.record(index * 0.1, ok=ok, slow="slow" if slow else None, may_open=False)
        assert change is None or isinstance(change, TripHeld)
        assert breaker.state is CLOSED


def test_requests_sent_before_half_open_or_before_closing_are_not_judged() -> None:
    """An answer takes seconds: one sent into the overload that opened the breaker finishes after the backend
    recovered, and says nothing about it now."""
    breaker = _tripped(now=0.0)  # opened at 0 by failures sent at 0
    assert breaker.admit(5.0)[0]  # half-open at 5: the trial
    assert breaker.record(7.0, ok=False, started=0.5) is None  # a straggler sent at 0.5
    assert breaker.state is HALF_OPEN
    assert breaker.record(7.5, ok=True, started=5.0) == Transition("a", HALF_OPEN, CLOSED, "trial answered in time")
    for _ in range(5):  # more stragglers of the overload, sent before the close
        assert breaker.record(8.0, ok=True, slow="ttft 3000ms>1000ms", started=4.0) is None
    assert breaker.state is CLOSED
