"""The admission queue: FIFO order, capacity and KV budget never exceeded, and no slot or KV space leaked by a
cancelled request."""

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
    with pytest.raises(ValueError, match="kv_budget_tokens"):
        AdmissionQueue(1, kv_budget_tokens=0)
    queue = AdmissionQueue(2, kv_budget_tokens=100)
    assert queue.try_acquire(10)
    with pytest.raises(RuntimeError, match="KV"):
        queue.release(20)
    assert (queue.running, queue.kv_reserved) == (1, 10)  # the refused release changed nothing


def test_a_request_waits_for_kv_space_and_is_admitted_when_it_frees() -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(8, kv_budget_tokens=100)
        await queue.acquire(60)
        waiter = asyncio.create_task(queue.acquire(50))
        await _settle()
        assert (queue.running, queue.waiting, queue.kv_reserved) == (1, 1, 60)  # a slot is free, KV space is not
        queue.release(60)
        await waiter
        assert (queue.running, queue.waiting, queue.kv_reserved) == (1, 0, 50)

    _run(scenario)


def test_the_head_that_does_not_fit_holds_back_those_behind_until_it_leaves() -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(8, kv_budget_tokens=100)
        await queue.acquire(60)
        big = asyncio.create_task(queue.acquire(80))
        small = asyncio.create_task(queue.acquire(10))
        await _settle()
        assert not small.done() and queue.waiting == 2  # first come, first served: no overtaking
        big.cancel()
        await _settle()
        assert small.done() and big.cancelled()
        assert (queue.running, queue.waiting, queue.kv_reserved) == (2, 0, 70)  # the cancelled one took nothing

    _run(scenario)


def test_a_request_larger_than_the_budget_is_admitted_alone() -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(8, kv_budget_tokens=100)
        await queue.acquire(10)
        huge = asyncio.create_task(queue.acquire(500))
        after = asyncio.create_task(queue.acquire(10))
        await _settle()
        assert not huge.done()
        queue.release(10)
        await huge
        await _settle()
        assert not after.done() and queue.kv_reserved == 500
        queue.release(500)
        await after
        assert queue.kv_reserved == 10

    _run(scenario)


def test_a_request_cancelled_just_as_it_is_admitted_hands_its_kv_space_on() -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(8, kv_budget_tokens=100)
        await queue.acquire(100)
        first = asyncio.create_task(queue.acquire(100))
        second = asyncio.create_task(queue.acquire(100))
        await _settle()
        queue.release(100)  # admits `first`, which has not run yet...
        first.cancel()  # ...and is cancelled before it does
        await _settle()
        assert first.cancelled()
        await second
        assert (queue.running, queue.waiting, queue.kv_reserved) == (1, 0, 100)

    _run(scenario)


def test_budget_changes_take_effect_at_the_next_admission() -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(8, kv_budget_tokens=100)
        await queue.acquire(100)
        waiters = [asyncio.create_task(queue.acquire(50)) for _ in range(3)]
        await _settle()
        queue.set_kv_budget(200)
        await _settle()
        assert (queue.running, queue.waiting, queue.kv_reserved) == (3, 1, 200)
        queue.set_kv_budget(50)
        queue.release(100)
        await _settle()
        assert queue.waiting == 1  # 100 still held: lowered, nobody admitted until it fits
        queue.set_kv_budget(None)
        await asyncio.gather(*waiters)
        assert (queue.running, queue.kv_reserved) == (3, 150)

    _run(scenario)


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=4), budget=st.none() | st.integers(min_value=1, max_value=120),
       plan=st.lists(st.tuples(st.sampled_from(["arrive", "finish", "cancel", "resize", "rebudget"]),
                               st.integers(min_value=0, max_value=50)), max_size=40))
def test_random_traffic_never_exceeds_capacity_or_budget_or_leaks(capacity: int, budget: int | None,
                                                                  plan: list[tuple[str, int]]) -> None:
    async def scenario() -> None:
        queue = AdmissionQueue(capacity, kv_budget_tokens=budget)
        limit, kv_limit = capacity, budget
        holding: list[tuple[asyncio.Task[None], int]] = []
        pending: list[tuple[asyncio.Task[None], int]] = []
        for action, pick in plan:
            if action == "arrive":
                pending.append((asyncio.create_task(queue.acquire(pick)), pick))
            elif action == "finish" and holding:
                queue.release(holding.pop(pick % len(holding))[1])
            elif action == "cancel" and pending:
                pending.pop(pick % len(pending))[0].cancel()
            elif action == "resize":
                limit = 1 + pick % 4
                queue.set_capacity(limit)
            elif action == "rebudget":
                kv_limit = None if pick == 0 else pick * 3
                queue.set_kv_budget(kv_limit)
            await _settle()
            alive = [(t, kv) for t, kv in pending if not t.cancelled()]
            admitted = [(t, kv) for t, kv in alive if t.done()]
            assert admitted == alive[:len(admitted)]  # first come, first served
            if admitted:
                assert queue.running <= limit
                if kv_limit is not None and len(holding) + len(admitted) > 1:
                    assert queue.kv_reserved <= kv_limit  # beyond it only a request admitted alone
            holding += admitted
            pending = [(t, kv) for t, kv in pending if not t.done()]
            assert queue.running == len(holding)
            assert queue.kv_reserved == sum(kv for _, kv in holding)
            assert queue.waiting == len(pending)
        for task, _ in pending:
            task.cancel()
        await _settle()
        for _, kv in holding:
            queue.release(kv)
        assert (queue.running, queue.waiting, queue.kv_reserved) == (0, 0, 0)

    _run(scenario)
