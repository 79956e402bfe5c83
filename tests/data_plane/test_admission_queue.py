"""The queue's order: FIFO within a priority class, higher classes first, bounded, and a woken waiter
that goes back keeps its place."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from data_plane.limits.admission_queue import PriorityFifo


class Item:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def test_fifo_within_a_class_and_priority_first() -> None:
    queue: PriorityFifo[Item] = PriorityFifo(10)
    a, b, c, d = Item("a"), Item("b"), Item("c"), Item("d")
    queue.push(a, 1)
    queue.push(b, 2)
    queue.push(c, 1)
    queue.push(d, 0)
    assert [queue.pop() for _ in range(5)] == [d, a, c, b, None]


def test_full_queue_refuses_and_remove_frees_a_place() -> None:
    queue: PriorityFifo[Item] = PriorityFifo(2)
    a, b, c = Item("a"), Item("b"), Item("c")
    assert queue.push(a, 1) is not None and queue.push(b, 1) is not None
    assert queue.push(c, 0) is None
    assert queue.remove(a) and not queue.remove(a)
    assert queue.push(c, 1) is not None
    assert queue.items() == [b, c]


def test_push_back_restores_the_original_place() -> None:
    queue: PriorityFifo[Item] = PriorityFifo(5)
    a, b, c = Item("a"), Item("b"), Item("c")
    seq_a = queue.push(a, 1)
    queue.push(b, 1)
    assert queue.pop() is a
    queue.push(c, 1)
    assert seq_a is not None
    queue.push_back(a, 1, seq_a)
    assert queue.items() == [a, b, c]


@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=50), st.integers(1, 30))
def test_order_is_priority_then_arrival(pushes: list[tuple[int, bool]], size: int) -> None:
    queue: PriorityFifo[Item] = PriorityFifo(size)
    accepted: list[tuple[int, int, Item]] = []
    for index, (priority, pop_now) in enumerate(pushes):
        item = Item(str(index))
        seq = queue.push(item, priority)
        assert (seq is None) == (len(accepted) >= size)
        if seq is not None:
            accepted.append((priority, seq, item))
        if pop_now and accepted:
            expected = min(accepted, key=lambda entry: (entry[0], entry[1]))
            assert queue.pop() is expected[2]
            accepted.remove(expected)
        assert len(queue) == len(accepted)
    assert queue.items() == [entry[2] for entry in sorted(accepted, key=lambda e: (e[0], e[1]))]
