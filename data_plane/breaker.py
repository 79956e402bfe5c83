"""The circuit breaker of one deployment as a pure state machine (closed, open, half-open), in h11's
shape: every transition is in `TRANSITIONS`; an illegal event raises and leaves the state untouched."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from data_plane.table import BreakerSettings

DEFAULT_TRIAL_TIMEOUT_S = 30.0
_WINDOW_SLOTS = 10


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class BreakerEvent(StrEnum):
    TRIP = "trip"  # the window's error rate or p95 went over its threshold, or failures came in a row
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


class BreakerProtocolError(Exception):
    """An event the breaker's current state does not allow; the breaker is left as it was."""


@dataclass(frozen=True, slots=True)
class Transition:
    deployment: str
    from_state: BreakerState
    to_state: BreakerState
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
                 "_window", "_failures_in_a_row")

    def __init__(self, deployment: str, settings: BreakerSettings, *,
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

    def abandon(self, now: float) -> None:
        """An admitted request ended with no verdict on the backend: a half-open trial slot is freed."""
        if self._state is BreakerState.HALF_OPEN:
            self._trial_started_at = None

    def record(self, now: float, *, ok: bool, latency_ms: float) -> Transition | None:
        settings = self.settings
        slow = 0.0 < settings.p95_threshold_ms < latency_ms
        state = self._state
        if state is BreakerState.HALF_OPEN:
            # Whatever finishes first while half-open is the verdict: a straggler admitted before the
            # breaker opened says as much about the backend now as the trial does.
            if ok and not slow:
                return self.fire(BreakerEvent.TRIAL_OK, now, f"trial ok in {latency_ms:.0f}ms")
            verdict = (f"trial slow {latency_ms:.0f}ms>{settings.p95_threshold_ms:g}ms" if ok
                       else f"trial failed after {latency_ms:.0f}ms")
            return self.fire(BreakerEvent.TRIAL_FAILED, now, verdict)
        if state is BreakerState.OPEN:
            return None  # stragglers admitted before the breaker opened
        requests, errors, slow_count = self._window.add(now, error=not ok, slow=slow)
        # An answer slower than the p95 threshold is a failure here, as it is for a half-open trial.
        self._failures_in_a_row = 0 if ok and not slow else self._failures_in_a_row + 1
        if requests >= settings.min_requests:
            error_rate = errors / requests
            if error_rate > settings.error_rate_threshold:
                return self.fire(BreakerEvent.TRIP, now, f"error_rate={error_rate:.2f}>"
                                 f"{settings.error_rate_threshold:.2f} over {requests} requests")
            # p95 > threshold exactly when more than 5 % of the requests are slower than it.
            if slow_count * 20 > requests:
                return self.fire(BreakerEvent.TRIP, now, f"p95>{settings.p95_threshold_ms:g}ms over {requests} "
                                 f"requests ({slow_count} slower)")
        # A backend that now fails (or is slow on) every request trips, however many successes the window
        # still holds: once traffic has moved away, the window would never see enough slow answers.
        if 0 < settings.consecutive_failures <= self._failures_in_a_row:
            return self.fire(BreakerEvent.TRIP, now, f"{self._failures_in_a_row} failed or slow answers in a row")
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
        elif target is BreakerState.CLOSED:
            self._window = _OutcomeWindow(self.settings.window_s)
            self._failures_in_a_row = 0
        return transition
