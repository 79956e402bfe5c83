"""The circuit breaker of one deployment as a pure state machine (closed, open, half-open), in h11's
shape: every transition is in `TRANSITIONS`; an illegal event raises and leaves the state untouched.

It judges the backend, never an answer's length: an answer counts against it when it failed, or when its
time to first token or time per output token was over the model's thresholds (`answer_timing.slowness`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from meridian_common.catalog import BreakerConfig

DEFAULT_TRIAL_TIMEOUT_S = 10.0
_WINDOW_SLOTS = 10


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class BreakerEvent(StrEnum):
    TRIP = "trip"  # the window's error rate, TTFT p95 or TPOT p95 went over a threshold, or failures in a row
    COOL_DOWN = "cool-down"  # open_duration_s elapsed and a trial request is admitted
    TRIAL_OK = "trial-ok"
    TRIAL_FAILED = "trial-failed"


TRANSITIONS: Mapping[BreakerState, Mapping[BreakerEvent, BreakerState]] = MappingProxyType({
    BreakerState.CLOSED: {BreakerEvent.TRIP: BreakerState.OPEN},
    BreakerState.OPEN: {BreakerEvent.COOL_DOWN: BreakerState.HALF_OPEN},
    BreakerState.HALF_OPEN: {
        BreakerEvent.TRIAL_OK: BreakerState.CLOSED,
        BreakerEvent.TRIAL_FAILED: BreakerState.OPEN,
    },
})


def ejection_limit(deployments: int, max_ejection_percent: float) -> int:
    """How many of a model's deployments breakers may hold open at once: the percentage of them, rounded
    down, and at least one (as Envoy ejects one host whatever its percentage says)."""
    return max(1, math.floor(deployments * max_ejection_percent / 100 + 1e-9))


class BreakerProtocolError(Exception):
    """An event the breaker's current state does not allow; the breaker is left as it was."""


@dataclass(frozen=True, slots=True)
class Transition:
    deployment: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str


@dataclass(frozen=True, slots=True)
class TripHeld:
    """The breaker would have opened, but as many of the model's deployments as may be ejected at once
    already are: it stays closed (Envoy's max ejection percent) and judges the next answer afresh."""

    deployment: str
    reason: str


class _OutcomeWindow:
    """Requests, errors and slow requests over the last `window_s`, in slots, summed on demand."""

    __slots__ = ("_slot_s", "_ids", "_requests", "_errors", "_slow")

    def __init__(self, window_s: float) -> None:
        self._slot_s = window_s / _WINDOW_SLOTS
        self._ids = [-1] * _WINDOW_SLOTS
        self._requests = [0] * _WINDOW_SLOTS
        self._errors = [0] * _WINDOW_SLOTS
        self._slow = [0] * _WINDOW_SLOTS

    def add(self, now: float, *, error: bool, slow: bool) -> tuple[int, int, int]:
        """Records one outcome; returns the window's (requests, errors, slow) including it."""
        slot_id = int(now // self._slot_s)
        index = slot_id % _WINDOW_SLOTS
        if self._ids[index] != slot_id:
            self._ids[index] = slot_id
            self._requests[index] = self._errors[index] = self._slow[index] = 0
        self._requests[index] += 1
        self._errors[index] += error
        self._slow[index] += slow
        oldest = slot_id - _WINDOW_SLOTS + 1
        requests = errors = slow_count = 0
        for i, sid in enumerate(self._ids):
            if sid >= oldest:
                requests += self._requests[i]
                errors += self._errors[i]
                slow_count += self._slow[i]
        return requests, errors, slow_count


class CircuitBreaker:
    """Pure: every method takes `now` (monotonic seconds). The breaker keeps its own outcome window and
    starts it afresh on closing, so it never re-trips on what happened before it re-closed."""

    __slots__ = ("deployment", "settings", "trial_timeout_s", "_state", "_opened_at", "_trial_started_at",
                 "_window", "_failures_in_a_row", "_judging_since")

    def __init__(self, deployment: str, settings: BreakerConfig, *,
                 trial_timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S) -> None:
        self.deployment = deployment
        self.settings = settings
        # A trial whose outcome never comes (the client left) must not hold half-open shut forever.
        self.trial_timeout_s = trial_timeout_s
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._trial_started_at: float | None = None
        self._window = _OutcomeWindow(settings.window_s)
        self._failures_in_a_row = 0
        # Requests sent before the breaker last closed or went half-open describe the backend as it was then:
        # with answers that take seconds, a straggler from an overload must not re-open a recovered backend.
        self._judging_since = float("-inf")

    @property
    def state(self) -> BreakerState:
        """The state as last moved; `state_at` also reports an elapsed OPEN as HALF_OPEN."""
        return self._state

    def trial_outstanding(self, now: float) -> bool:
        started = self._trial_started_at
        return (self._state is BreakerState.HALF_OPEN and started is not None
                and now - started < self.trial_timeout_s)

    def state_at(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now - self._opened_at >= self.settings.open_duration_s:
            return BreakerState.HALF_OPEN
        return self._state

    def admit(self, now: float) -> tuple[bool, Transition | None]:
        """May this request go to the deployment? Half-open admits one trial at a time."""
        state = self._state
        if state is BreakerState.CLOSED:
            return True, None
        if state is BreakerState.OPEN:
            elapsed = now - self._opened_at
            if elapsed < self.settings.open_duration_s:
                return False, None
            reason = f"open for {elapsed:.1f}s; one trial admitted"
            transition = self.fire(BreakerEvent.COOL_DOWN, now, reason)
            self._trial_started_at = now
            return True, transition
        if self.trial_outstanding(now):
            return False, None
        self._trial_started_at = now
        return True, None

    def abandon(self, started: float) -> None:
        """The request sent at `started` ended with no verdict on the backend: when it was the half-open trial,
        the trial slot is freed. One sent before the trial (admitted while closed, or an earlier trial given up
        after `trial_timeout_s`) leaves the trial outstanding: freeing it would let a second trial through."""
        if self._state is BreakerState.HALF_OPEN and self._is_trial(started):
            self._trial_started_at = None

    def _is_trial(self, started: float) -> bool:
        """Sent at or after the trial's admission: the trial itself, since half-open admits no other (a panic
        pick sent alongside it counts as one, as it does for the verdict)."""
        trial_started = self._trial_started_at
        return trial_started is not None and started >= trial_started

    def record(self, now: float, *, ok: bool, slow: str | None = None, may_open: bool = True,
               started: float | None = None, ttft_measured: bool = True) -> Transition | TripHeld | None:
        """One finished request sent at `started` (default `now`): `ok` False for a failure, `slow` the reason
        an answer counts as slow. `may_open` False when the model's ejection cap is reached: a closed breaker
        then stays closed. A request sent before the breaker last closed or went half-open is not judged.
        A whole answer (`ttft_measured` False) cannot show a slow first token: while half-open with a TTFT
        threshold, its passing is no verdict, and the trial slot is freed for one that can tell."""
        state = self._state
        sent = now if started is None else started
        if sent < self._judging_since:
            return None
        if state is BreakerState.HALF_OPEN:
            if ok and slow is None and not ttft_measured and self.settings.ttft_p95_threshold_ms > 0:
                if self._is_trial(sent):
                    self._trial_started_at = None
                return None
            # The first request sent since half-open to finish is the verdict: the trial, or one admitted
            # alongside it.
            if ok and slow is None:
                return self.fire(BreakerEvent.TRIAL_OK, now, "trial answered in time")
            return self.fire(BreakerEvent.TRIAL_FAILED, now, f"trial slow: {slow}" if ok else "trial failed")
        if state is BreakerState.OPEN:
            return None  # stragglers admitted before the breaker opened
        requests, errors, slow_count = self._window.add(now, error=not ok, slow=slow is not None)
        # A slow answer is a failure here, as it is for a half-open trial.
        self._failures_in_a_row = 0 if ok and slow is None else self._failures_in_a_row + 1
        reason = self._trip_reason(requests, errors, slow_count, slow)
        if reason is None:
            return None
        if not may_open:
            return TripHeld(self.deployment, reason)
        return self.fire(BreakerEvent.TRIP, now, reason)

    def _trip_reason(self, requests: int, errors: int, slow_count: int, slow: str | None) -> str | None:
        settings = self.settings
        if requests >= settings.min_requests:
            error_rate = errors / requests
            if error_rate > settings.error_rate_threshold:
                return f"error_rate={error_rate:.2f}>{settings.error_rate_threshold:.2f} over {requests} requests"
            # A p95 is over its threshold exactly when more than 5 % of the answers are.
            if slow_count * 20 > requests:
                return f"ttft or tpot p95 over threshold: {slow_count} of {requests} answers slow" + (
                    f", last {slow}" if slow else "")
        # A backend that now fails (or is slow on) every request trips, however many successes the window
        # still holds: once traffic has moved away, the window would never see enough slow answers.
        if 0 < settings.consecutive_failures <= self._failures_in_a_row:
            return f"{self._failures_in_a_row} failed or slow answers in a row" + (f", last {slow}" if slow else "")
        return None

    def fire(self, event: BreakerEvent, now: float, reason: str) -> Transition:
        """Applies one event from `TRANSITIONS`; raises BreakerProtocolError (changing nothing) otherwise."""
        target = TRANSITIONS[self._state].get(event)
        if target is None:
            raise BreakerProtocolError(
                f"breaker of {self.deployment!r}: event {event.value!r} is illegal in state "
                f"{self._state.value!r}"
            )
        transition = Transition(self.deployment, self._state, target, reason)
        self._state = target
        self._trial_started_at = None
        if target is BreakerState.OPEN:
            self._opened_at = now
        else:
            self._judging_since = now
        if target is BreakerState.CLOSED:
            self._window = _OutcomeWindow(self.settings.window_s)
            self._failures_in_a_row = 0
        return transition
