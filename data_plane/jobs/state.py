"""The asynchronous job's state machine and its lease and callback decisions, with no I/O and no clock.

Every legal transition is in `_JOB_TABLE` or `_CALLBACK_TABLE`; `apply` raises IllegalTransition for
anything else and the state passed in stays as it was (states are frozen values). The Redis shell
(`job_store.py`) reads a record, asks `apply` for the next state and writes it only if nobody wrote the
record in between, so two routers can never both move a job on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class CallbackStatus(StrEnum):
    NONE = "none"              # no callback_url
    WAITING = "waiting"        # the job is not finished yet
    PENDING = "pending"        # due at callback_due_ms
    DELIVERING = "delivering"  # a router is posting it; due again (taken over) at callback_due_ms
    DELIVERED = "delivered"
    FAILED = "failed"


class IllegalTransition(Exception):
    """The event cannot happen in the job's current state; nothing was changed."""


@dataclass(frozen=True, slots=True)
class JobState:
    id: str
    status: JobStatus
    created_ms: int
    updated_ms: int
    max_attempts: int
    attempts: int = 0
    """Runs started (a claim counts one): a takeover retries with attempts + 1 on the next claim."""
    owner: str | None = None
    lease_until_ms: int = 0
    not_before_ms: int = 0
    error: str | None = None
    error_code: str | None = None
    version: int = 1
    callback_status: CallbackStatus = CallbackStatus.NONE
    callback_attempts: int = 0
    callback_max_attempts: int = 0
    callback_due_ms: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobState:
        values = dict(data)
        values["status"] = JobStatus(values["status"])
        values["callback_status"] = CallbackStatus(values.get("callback_status", "none"))
        return cls(**values)


def new_job(job_id: str, *, now_ms: int, max_attempts: int, callback_max_attempts: int = 0) -> JobState:
    callback = CallbackStatus.WAITING if callback_max_attempts > 0 else CallbackStatus.NONE
    return JobState(id=job_id, status=JobStatus.QUEUED, created_ms=now_ms, updated_ms=now_ms,
                    max_attempts=max_attempts, callback_status=callback,
                    callback_max_attempts=callback_max_attempts)


# Events. The router that sends one says who it is where ownership matters.

@dataclass(frozen=True, slots=True)
class Claim:
    router_id: str
    lease_ms: int


@dataclass(frozen=True, slots=True)
class Renew:
    router_id: str
    lease_ms: int


@dataclass(frozen=True, slots=True)
class Succeed:
    router_id: str


@dataclass(frozen=True, slots=True)
class Fail:
    """A final answer that retrying would not change (a 4xx)."""

    router_id: str
    reason: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """A failure a later attempt may not have (a 5xx, a 429): queued again from `retry_at_ms`, or failed when
    the attempts are spent."""

    router_id: str
    reason: str
    retry_at_ms: int
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Expire:
    """Another router found the owner's lease expired: the owner is taken to be dead."""


@dataclass(frozen=True, slots=True)
class Cancel:
    pass


@dataclass(frozen=True, slots=True)
class CallbackStart:
    lease_ms: int


@dataclass(frozen=True, slots=True)
class CallbackDelivered:
    pass


@dataclass(frozen=True, slots=True)
class CallbackFailed:
    retry_at_ms: int


JobEvent = Claim | Renew | Succeed | Fail | Retry | Expire | Cancel
CallbackEvent = CallbackStart | CallbackDelivered | CallbackFailed
Event = JobEvent | CallbackEvent
Step = Callable[[JobState, Any, int], JobState]


def _own(state: JobState, router_id: str) -> None:
    if state.owner != router_id:
        raise IllegalTransition(f"job {state.id} is run by {state.owner}, not {router_id}")


def _finish(state: JobState, now_ms: int, status: JobStatus, **changes: Any) -> JobState:
    """A terminal state: no owner, no lease, and the callback (if any) becomes due now."""
    callback = CallbackStatus.PENDING if state.callback_status is CallbackStatus.WAITING else state.callback_status
    return replace(state, status=status, owner=None, lease_until_ms=0, callback_status=callback,
                   callback_due_ms=now_ms if callback is CallbackStatus.PENDING else 0, **changes)


def _claim(state: JobState, event: Claim, now_ms: int) -> JobState:
    if state.not_before_ms > now_ms:
        raise IllegalTransition(f"job {state.id} may not run before {state.not_before_ms}")
    return replace(state, status=JobStatus.RUNNING, owner=event.router_id, attempts=state.attempts + 1,
                   lease_until_ms=now_ms + event.lease_ms, not_before_ms=0)


def _renew(state: JobState, event: Renew, now_ms: int) -> JobState:
    _own(state, event.router_id)
    return replace(state, lease_until_ms=now_ms + event.lease_ms)


def _succeed(state: JobState, event: Succeed, now_ms: int) -> JobState:
    _own(state, event.router_id)
    return _finish(state, now_ms, JobStatus.SUCCEEDED, error=None, error_code=None)


def _fail(state: JobState, event: Fail, now_ms: int) -> JobState:
    _own(state, event.router_id)
    return _finish(state, now_ms, JobStatus.FAILED, error=event.reason, error_code=event.code)


def _requeue(state: JobState, now_ms: int, reason: str, code: str | None, retry_at_ms: int) -> JobState:
    if state.attempts >= state.max_attempts:
        return _finish(state, now_ms, JobStatus.FAILED, error=f"{reason} (all {state.max_attempts} attempts spent)",
                       error_code=code)
    return replace(state, status=JobStatus.QUEUED, owner=None, lease_until_ms=0, not_before_ms=retry_at_ms,
                   error=reason, error_code=code)


def _retry(state: JobState, event: Retry, now_ms: int) -> JobState:
    _own(state, event.router_id)
    return _requeue(state, now_ms, event.reason, event.code, event.retry_at_ms)


def _expire(state: JobState, event: Expire, now_ms: int) -> JobState:
    if not lease_expired(state, now_ms):
        raise IllegalTransition(f"job {state.id} is still leased by {state.owner} until {state.lease_until_ms}")
    return _requeue(state, now_ms, f"router {state.owner} stopped renewing its lease", "lease_expired", now_ms)


def _cancel(state: JobState, event: Cancel, now_ms: int) -> JobState:
    return _finish(state, now_ms, JobStatus.CANCELLED, not_before_ms=0)


_JOB_TABLE: dict[tuple[JobStatus, type], Step] = {
    (JobStatus.QUEUED, Claim): _claim,
    (JobStatus.QUEUED, Cancel): _cancel,
    (JobStatus.RUNNING, Renew): _renew,
    (JobStatus.RUNNING, Succeed): _succeed,
    (JobStatus.RUNNING, Fail): _fail,
    (JobStatus.RUNNING, Retry): _retry,
    (JobStatus.RUNNING, Expire): _expire,
    (JobStatus.RUNNING, Cancel): _cancel,
}


def _callback_start(state: JobState, event: CallbackStart, now_ms: int) -> JobState:
    if not state.terminal or state.callback_due_ms > now_ms:
        raise IllegalTransition(f"the callback of job {state.id} is not due")
    if state.callback_attempts >= state.callback_max_attempts:
        # Only a takeover gets here: the last deliverer died mid-post, and no attempt is left.
        return replace(state, callback_status=CallbackStatus.FAILED, callback_due_ms=0)
    return replace(state, callback_status=CallbackStatus.DELIVERING, callback_attempts=state.callback_attempts + 1,
                   callback_due_ms=now_ms + event.lease_ms)


def _callback_delivered(state: JobState, event: CallbackDelivered, now_ms: int) -> JobState:
    return replace(state, callback_status=CallbackStatus.DELIVERED, callback_due_ms=0)


def _callback_failed(state: JobState, event: CallbackFailed, now_ms: int) -> JobState:
    if state.callback_attempts >= state.callback_max_attempts:
        return replace(state, callback_status=CallbackStatus.FAILED, callback_due_ms=0)
    return replace(state, callback_status=CallbackStatus.PENDING, callback_due_ms=event.retry_at_ms)


_CALLBACK_TABLE: dict[tuple[CallbackStatus, type], Step] = {
    (CallbackStatus.PENDING, CallbackStart): _callback_start,
    # A deliverer that died mid-post is taken over once its delivery lease (callback_due_ms) passes.
    (CallbackStatus.DELIVERING, CallbackStart): _callback_start,
    (CallbackStatus.DELIVERING, CallbackDelivered): _callback_delivered,
    (CallbackStatus.DELIVERING, CallbackFailed): _callback_failed,
}


def apply(state: JobState, event: Event, now_ms: int) -> JobState:
    """The state after `event` at `now_ms`, with the version moved on; raises IllegalTransition otherwise."""
    if isinstance(event, CallbackStart | CallbackDelivered | CallbackFailed):
        step = _CALLBACK_TABLE.get((state.callback_status, type(event)))
        subject = f"callback {state.callback_status}"
    else:
        step = _JOB_TABLE.get((state.status, type(event)))
        subject = str(state.status)
    if step is None:
        raise IllegalTransition(f"job {state.id}: {type(event).__name__} is not allowed when {subject}")
    return replace(step(state, event, now_ms), updated_ms=now_ms, version=state.version + 1)


def legal_events(status: JobStatus) -> frozenset[type]:
    return frozenset(event for (source, event) in _JOB_TABLE if source is status)


def claimable(state: JobState, now_ms: int) -> bool:
    return state.status is JobStatus.QUEUED and state.not_before_ms <= now_ms


def lease_expired(state: JobState, now_ms: int) -> bool:
    """A running job whose owner has not renewed in time: any router may take it over."""
    return state.status is JobStatus.RUNNING and state.lease_until_ms <= now_ms


def callback_due(state: JobState, now_ms: int) -> bool:
    return (state.callback_status in (CallbackStatus.PENDING, CallbackStatus.DELIVERING)
            and state.callback_due_ms <= now_ms)


def backoff_ms(attempt: int, base_ms: int, cap_ms: int) -> int:
    """Exponential: base, 2 base, 4 base ... for attempts 1, 2, 3 ..., at most cap."""
    return int(min(cap_ms, base_ms * 2 ** max(0, attempt - 1)))


def retryable(status_code: int) -> bool:
    """Worth another attempt later: the router or its backends could not serve now."""
    return status_code >= 500 or status_code == 429
