"""The job state machine driven directly, as h11's tests drive its connection: every legal transition
from the table, every illegal one leaves the state untouched, and random event sequences never reach
an illegal state or more attempts than allowed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.jobs.state import (
    TERMINAL,
    CallbackDelivered,
    CallbackFailed,
    CallbackStart,
    CallbackStatus,
    Cancel,
    Claim,
    Event,
    Expire,
    Fail,
    IllegalTransition,
    JobState,
    JobStatus,
    Renew,
    Retry,
    Succeed,
    apply,
    backoff_ms,
    callback_due,
    claimable,
    lease_expired,
    legal_events,
    new_job,
)
from data_plane.jobs.store import JobRequest, JobResult, StoredJob, placement

A, B = "router-a", "router-b"


def _queued(max_attempts: int = 3, callbacks: int = 0) -> JobState:
    return new_job("job_1", now_ms=1000, max_attempts=max_attempts, callback_max_attempts=callbacks)


def _running(owner: str = A, lease_until_ms: int = 7000, **changes: Any) -> JobState:
    return replace(apply(_queued(**changes), Claim(owner, 5000), 2000), lease_until_ms=lease_until_ms)


@pytest.mark.parametrize(("start", "event", "now", "status", "attempts", "owner"), [
    (_queued(), Claim(A, 5000), 2000, JobStatus.RUNNING, 1, A),
    (_queued(), Cancel(), 2000, JobStatus.CANCELLED, 0, None),
    (_running(), Renew(A, 5000), 3000, JobStatus.RUNNING, 1, A),
    (_running(), Succeed(A), 3000, JobStatus.SUCCEEDED, 1, None),
    (_running(), Fail(A, "bad request"), 3000, JobStatus.FAILED, 1, None),
    (_running(), Retry(A, "no healthy deployment", 4000), 3000, JobStatus.QUEUED, 1, None),
    (_running(), Expire(), 7000, JobStatus.QUEUED, 1, None),
    (_running(), Cancel(), 3000, JobStatus.CANCELLED, 1, None),
    (_running(max_attempts=1), Expire(), 7000, JobStatus.FAILED, 1, None),
    (_running(max_attempts=1), Retry(A, "503", 4000), 3000, JobStatus.FAILED, 1, None),
])
def test_legal_transitions(start: JobState, event: Event, now: int, status: JobStatus, attempts: int,
                           owner: str | None) -> None:
    after = apply(start, event, now)
    assert (after.status, after.attempts, after.owner) == (status, attempts, owner)
    assert after.version == start.version + 1 and after.updated_ms == now
    if status is JobStatus.RUNNING:
        assert after.lease_until_ms == now + 5000
    else:
        assert after.lease_until_ms == 0


@pytest.mark.parametrize(("start", "event", "now"), [
    (_queued(), Renew(A, 5000), 2000),
    (_queued(), Succeed(A), 2000),
    (_queued(), Expire(), 2000),
    (replace(_queued(), not_before_ms=5000), Claim(A, 5000), 2000),  # a retry waits for its backoff
    (_running(), Claim(B, 5000), 3000),
    (_running(), Renew(B, 5000), 3000),   # not the owner
    (_running(), Succeed(B), 3000),
    (_running(), Expire(), 6999),          # the lease still holds
    (apply(_running(), Succeed(A), 3000), Cancel(), 4000),
    (apply(_running(), Cancel(), 3000), Succeed(A), 4000),
    (apply(_queued(), Cancel(), 3000), Claim(A, 5000), 4000),
    (_running(callbacks=3), CallbackStart(1000), 3000),  # not finished yet
])
def test_illegal_events_raise_and_change_nothing(start: JobState, event: Event, now: int) -> None:
    before = start.as_dict()
    with pytest.raises(IllegalTransition):
        apply(start, event, now)
    assert start.as_dict() == before


def test_terminal_states_accept_no_job_event() -> None:
    for status in TERMINAL:
        assert legal_events(status) == frozenset()


def test_a_lease_expires_only_when_running_and_past() -> None:
    running = _running(lease_until_ms=7000)
    assert not lease_expired(running, 6999) and lease_expired(running, 7000)
    assert not lease_expired(_queued(), 10**12)
    assert claimable(_queued(), 0) and not claimable(running, 10**12)


def test_callback_lifecycle_with_retries_and_a_bound() -> None:
    done = apply(_running(callbacks=2), Succeed(A), 3000)
    assert done.callback_status is CallbackStatus.PENDING and callback_due(done, 3000)
    first = apply(done, CallbackStart(10_000), 3000)
    assert first.callback_status is CallbackStatus.DELIVERING and not callback_due(first, 12_999)
    assert callback_due(first, 13_000)  # the deliverer died: another router may take it over
    retry = apply(first, CallbackFailed(4000), 3500)
    assert retry.callback_status is CallbackStatus.PENDING and not callback_due(retry, 3999)
    second = apply(retry, CallbackStart(10_000), 4000)
    assert apply(second, CallbackDelivered(), 4100).callback_status is CallbackStatus.DELIVERED
    assert apply(second, CallbackFailed(9000), 4100).callback_status is CallbackStatus.FAILED  # 2 of 2 spent
    delivered = apply(second, CallbackDelivered(), 4100)
    with pytest.raises(IllegalTransition):
        apply(delivered, CallbackStart(10_000), 10**9)


def test_a_dead_deliverer_with_no_attempt_left_fails_the_callback() -> None:
    done = apply(_running(callbacks=1), Succeed(A), 3000)
    delivering = apply(done, CallbackStart(1000), 3000)
    taken_over = apply(delivering, CallbackStart(1000), 4000)  # its delivery lease passed
    assert taken_over.callback_status is CallbackStatus.FAILED and not callback_due(taken_over, 10**12)


def test_no_callback_is_ever_due_without_a_url() -> None:
    done = apply(_running(), Succeed(A), 3000)
    assert done.callback_status is CallbackStatus.NONE and not callback_due(done, 10**12)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_ms(n, 1000, 5000) for n in range(1, 6)] == [1000, 2000, 4000, 5000, 5000]


def test_placement_moves_the_job_between_indexes() -> None:
    queued, running = _queued(), _running()
    assert placement(None, queued).pending == "push"
    assert placement(queued, running).pending == "remove" and placement(queued, running).lease_score == "7000"
    requeued = apply(running, Expire(), 8000)
    assert placement(running, requeued).pending == "push" and placement(running, requeued).lease_score == ""
    done = apply(_running(callbacks=1), Succeed(A), 3000)
    assert placement(running, done).callback_score == "3000"


def test_the_document_carries_the_exact_stored_completion() -> None:
    body = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":{"total_tokens":3}}'
    done = apply(_running(), Succeed(A), 3000)
    stored = StoredJob(done, JobRequest("chat/completions", b'{"model": "m"}', {}, "anonymous"),
                       JobResult(200, body, {"x-meridian-backend": "fast"}))
    document = stored.document()
    assert b'"result":' + body in document
    assert b'"status":"succeeded"' in document


_EVENTS = st.one_of(
    st.builds(Claim, st.sampled_from([A, B]), st.integers(1, 5000)),
    st.builds(Renew, st.sampled_from([A, B]), st.integers(1, 5000)),
    st.builds(Succeed, st.sampled_from([A, B])),
    st.builds(Fail, st.sampled_from([A, B]), st.just("bad")),
    st.builds(Retry, st.sampled_from([A, B]), st.just("busy"), st.integers(0, 20_000)),
    st.just(Expire()),
    st.just(Cancel()),
    st.builds(CallbackStart, st.integers(1, 5000)),
    st.just(CallbackDelivered()),
    st.builds(CallbackFailed, st.integers(0, 20_000)),
)


@settings(max_examples=300, deadline=None)
@given(max_attempts=st.integers(1, 4), callbacks=st.integers(0, 3),
       steps=st.lists(st.tuples(_EVENTS, st.integers(0, 3000)), max_size=40))
def test_random_event_sequences_stay_legal(max_attempts: int, callbacks: int,
                                           steps: list[tuple[Event, int]]) -> None:
    state, now = new_job("job_x", now_ms=0, max_attempts=max_attempts, callback_max_attempts=callbacks), 0
    for event, elapsed in steps:
        now += elapsed
        try:
            after = apply(state, event, now)
        except IllegalTransition:
            continue
        assert after.version == state.version + 1
        if state.terminal:  # a finished job only ever moves its callback on
            assert after.status is state.status and isinstance(
                event, CallbackStart | CallbackDelivered | CallbackFailed)
        state = after
        assert 0 <= state.attempts <= max_attempts
        assert (state.owner is not None) == (state.status is JobStatus.RUNNING)
        assert state.callback_attempts <= max(callbacks, 0)
        if callbacks == 0:
            assert state.callback_status is CallbackStatus.NONE
        elif not state.terminal:
            assert state.callback_status is CallbackStatus.WAITING
        assert JobState.from_dict(state.as_dict()) == state
