"""The admission queue: FIFO order, capacity never exceeded, and no slot leaked by a cancelled request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.admission import AdmissionQueue


def _run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout=5))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_waiters_are_admitted_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        queue = AdmissionQueue(1)
        admitted: list[int] = []

        async def request(number: int) -> None:
            await queue.acquire()
            admitted.append(number)

        assert queue.try_acquire()
        tasks = [asyncio.create_task(request(n)) for n in range(5)]
        await _settle()
        assert (queue.running, queue.waiting) == (1, 5)
        for _ in range(5):
            queue.release()
            await _settle()
        await asyncio.gather(*tasks)
        assert queue.peak_running == 1
        return admitted

    assert _run(scenario) == [0, 1, 2, 3, 4]


def test_a_request_cancelled_while_waiting_leaves_the_queue() -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(1)
        await queue.acquire()
        waiter = asyncio.create_task(queue.acquire())
        behind = asyncio.create_task(queue.acquire())
        await _settle()
        waiter.cancel()
        await _settle()
        assert (queue.running, queue.waiting) == (1, 1)
        queue.release()
        await behind
        assert (queue.running, queue.waiting) == (1, 0)
        queue.release()
        assert queue.running == 0

    _run(scenario)


def test_a_request_cancelled_just_as_it_is_admitted_hands_the_slot_on() -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(1)
        await queue.acquire()
        first = asyncio.create_task(queue.acquire())
        second = asyncio.create_task(queue.acquire())
        await _settle()
        queue.release()  # admits `first`, which has not run yet...
        first.cancel()  # ...and is cancelled before it does
        await _settle()
        assert first.cancelled()
        await second
        assert (queue.running, queue.waiting) == (1, 0)

    _run(scenario)


def test_capacity_changes_take_effect_at_the_next_admission() -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(1)
        await queue.acquire()
        waiters = [asyncio.create_task(queue.acquire()) for _ in range(3)]
        await _settle()
        queue.set_capacity(3)
        await _settle()
        assert (queue.running, queue.waiting) == (3, 1)
        queue.set_capacity(1)
        queue.release()
        queue.release()
        await _settle()
        assert (queue.running, queue.waiting) == (1, 1)  # lowered: nobody admitted until below capacity
        queue.release()
        await asyncio.gather(*waiters)
        assert queue.peak_running == 3

    _run(scenario)


def test_invalid_use_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        AdmissionQueue(0)
    with pytest.raises(RuntimeError, match="release"):
        AdmissionQueue(1).release()


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=4),
       plan=st.lists(st.tuples(st.sampled_from(["arrive", "finish", "cancel", "resize"]),
                               st.integers(min_value=0, max_value=50)), max_size=40))
def test_random_traffic_never_exceeds_capacity_or_leaks(capacity: int,
                                                        plan: list[tuple[str, int]]) -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(capacity)
        limit = capacity
        holding: list[asyncio.Task[None]] = []
        pending: list[asyncio.Task[None]] = []
        for action, pick in plan:
            if action == "arrive":
                pending.append(asyncio.create_task(queue.acquire()))
            elif action == "finish" and holding:
                holding.pop(pick % len(holding))
                queue.release()
            elif action == "cancel" and pending:
                pending.pop(pick % len(pending)).cancel()
            elif action == "resize":
                limit = 1 + pick % 4
                queue.set_capacity(limit)
            await _settle()
            alive = [t for t in pending if not t.cancelled()]
            admitted = [t for t in alive if t.done()]
            assert admitted == alive[:len(admitted)]  # first come, first served
            if admitted:
                assert queue.running <= limit
            holding += admitted
            pending = [t for t in pending if not t.done()]
            assert queue.running == len(holding)
            assert queue.waiting == len(pending)
        for task in pending:
            task.cancel()
        await _settle()
        for _ in holding:
            queue.release()
        assert (queue.running, queue.waiting) == (0, 0)

    _run(scenario)
