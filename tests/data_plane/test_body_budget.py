"""The request-body budget: shares taken whole or grown chunk by chunk, refused without a change past the
capacity, and given back once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_plane.limits.body_budget import BodyBudget

# Each step: (share index, "grow" to a total or "release", its argument, what grow_to returns, bytes held after).
Step = tuple[int, str, int, bool | None, int]


@pytest.mark.parametrize(("capacity", "steps"), [
    pytest.param(100, [(0, "grow", 60, True, 60), (1, "grow", 40, True, 100), (2, "grow", 1, False, 100)],
                 id="declared lengths fill the budget exactly, one byte more is refused"),
    pytest.param(100, [(0, "grow", 101, False, 0)], id="a body larger than the whole budget is refused"),
    pytest.param(100, [(0, "grow", 30, True, 30), (0, "grow", 70, True, 70), (0, "grow", 101, False, 70),
                       (0, "grow", 100, True, 100)],
                 id="chunk by chunk: a refused growth keeps what was held"),
    pytest.param(100, [(0, "grow", 50, True, 50), (0, "grow", 20, True, 50)], id="a share never shrinks by growing"),
    pytest.param(100, [(0, "grow", 80, True, 80), (1, "grow", 30, False, 80), (0, "release", 0, None, 0),
                       (1, "grow", 30, True, 30)],
                 id="a released share makes room for the next"),
    pytest.param(100, [(0, "grow", 40, True, 40), (0, "release", 0, None, 0), (0, "release", 0, None, 0)],
                 id="releasing twice gives back once"),
    pytest.param(100, [(0, "release", 0, None, 0), (1, "grow", 100, True, 100)],
                 id="releasing an empty share changes nothing"),
    pytest.param(10, [(0, "grow", 0, True, 0), (1, "grow", 10, True, 10)], id="an empty body takes nothing"),
])
def test_shares_of_the_budget(capacity: int, steps: list[Step]) -> None:
    budget = BodyBudget(capacity)
    shares = [budget.share() for _ in range(3)]
    for index, action, argument, returns, held_after in steps:
        if action == "grow":
            assert shares[index].grow_to(argument) is returns
        else:
            shares[index].release()
        assert budget.held_bytes == held_after
        assert budget.held_bytes == sum(share.held_bytes for share in shares)


def test_a_released_share_cannot_grow_again() -> None:
    share = BodyBudget(10).share()
    share.release()
    with pytest.raises(ValueError, match="released"):
        share.grow_to(1)


def test_a_budget_needs_a_positive_capacity() -> None:
    with pytest.raises(ValueError, match="positive"):
        BodyBudget(0)


@given(st.lists(st.tuples(st.integers(0, 4), st.one_of(st.integers(0, 150), st.none())), max_size=60))
def test_never_over_capacity_and_all_comes_back(operations: list[tuple[int, int | None]]) -> None:
    """Any interleaving of growths (None: release) stays within the capacity, and releasing every share
    empties the budget."""
    budget = BodyBudget(100)
    shares = [budget.share() for _ in range(5)]
    for index, total in operations:
        share = shares[index]
        if total is None:
            share.release()
        elif not share.released:
            before = budget.held_bytes
            if not share.grow_to(total):
                assert budget.held_bytes == before
        assert 0 <= budget.held_bytes <= budget.capacity_bytes
    for share in shares:
        share.release()
    assert budget.held_bytes == 0
