"""Prompt blocks and the per-deployment prefix index: chained hashes match only with everything before them,
whole blocks only, bounded memory with the least recently used out, and the candidates' cached tokens."""

from __future__ import annotations

import pytest

from data_plane.deployments.prefix_index import (
    CALIBRATION_TOKENS,
    MIN_CAPACITY,
    PrefixIndex,
    block_tokens,
    prompt_blocks,
)


def test_blocks_chain_so_a_block_matches_only_with_everything_before_it() -> None:
    system = "s" * 600
    a = prompt_blocks(["system\n", system, "user\n", "a question" * 30], 64, 100)
    b = prompt_blocks(["system\n", system, "user\n", "another one" * 30], 64, 100)
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert shared == len("system\n" + system + "user\n") // 64
    # The same text at another position is another block: nothing matches after a difference.
    c = prompt_blocks(["X" * 64, "system\n", system], 64, 100)
    assert not set(a) & set(c)


def test_parts_are_joined_before_cutting_and_a_partial_block_is_not_hashed() -> None:
    assert prompt_blocks(["ab", "cd", "e"], 2, 10) == prompt_blocks(["abcde"], 2, 10)
    assert len(prompt_blocks(["abcde"], 2, 10)) == 2
    assert prompt_blocks(["a"], 2, 10) == ()


def test_only_the_leading_blocks_are_hashed() -> None:
    assert len(prompt_blocks(["x" * 1_000_000], 256, 8)) == 8


def test_the_index_matches_leading_blocks_and_forgets_the_least_recently_used() -> None:
    index = PrefixIndex(capacity=4)
    index.remember((1, 2, 3))
    assert index.matched((1, 2, 3, 4)) == 3
    assert index.matched((1, 5, 3)) == 1  # stops at the first block not held
    index.remember((1, 9))  # 1 used again, 2 is now the oldest
    index.remember((7,))
    assert len(index) == 4
    assert index.matched((1,)) == 1 and index.matched((2,)) == 0


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PrefixIndex(0)


@pytest.mark.parametrize(("chars", "tokens"), [(256, 64), (16, 4), (3, 1)])
def test_block_tokens_at_four_characters_a_token(chars: int, tokens: int) -> None:
    assert block_tokens(chars) == tokens


def _window(index: PrefixIndex, believed_share: float, tokens: int = CALIBRATION_TOKENS) -> None:
    index.sent(tokens, round(tokens * believed_share))


def test_an_index_that_believes_more_than_the_engine_hit_shrinks_from_what_it_holds() -> None:
    index = PrefixIndex(capacity=16_384)
    index.remember(tuple(range(4_000)))
    assert index.calibrate(0, 0) is None  # the first reading starts a window
    _window(index, believed_share=0.8)
    # The engine hit 40 % where the index believed 80 %: half of what it holds, not of its bound, is kept.
    assert index.calibrate(engine_hits_total=20_000, engine_queries_total=50_000) == 2_000
    assert len(index) == 2_000 and index.matched((3_999,)) == 1 and index.matched((0,)) == 0
    _window(index, believed_share=0.5)
    # The engine hit more than the index believed, and the index is full: it may hold too little now.
    assert index.calibrate(20_000 + 35_000, 50_000 + 50_000) == 2_501


def test_an_index_not_full_is_not_grown() -> None:
    index = PrefixIndex(capacity=1_000)
    index.remember(tuple(range(100)))
    index.calibrate(0, 0)
    _window(index, believed_share=0.5)
    assert index.calibrate(40_000, 50_000) is None
    assert index.capacity == 1_000


def test_an_index_that_the_engine_keeps_up_with_grows_back_when_full() -> None:
    index = PrefixIndex(capacity=1_000)
    index.remember(tuple(range(1_000)))
    index.calibrate(0, 0)
    _window(index, believed_share=0.8)
    assert index.calibrate(10_000, 50_000) == 500  # 20 % of 80 %: at most halved
    _window(index, believed_share=0.6)
    assert index.calibrate(10_000 + 30_000, 100_000) == 626  # the engine hit 60 % as believed, the index is full
    _window(index, believed_share=0.6)
    index.remember(tuple(range(1_000, 2_000)))
    assert index.calibrate(40_000 + 40_000, 150_000) == 783
    for _ in range(5):
        index.remember(tuple(range(5_000, 7_000)))
        _window(index, believed_share=0.5)
        index.calibrate(index.capacity * 1_000_000, index.capacity * 1_000_000 + 1)  # the engine hits everything
    assert index.capacity == 1_000  # never past its configured size


def test_no_verdict_before_a_window_of_evidence_or_after_an_engine_restart() -> None:
    index = PrefixIndex(capacity=1_000)
    index.remember(tuple(range(1_000)))
    index.calibrate(5_000, 10_000)
    _window(index, believed_share=0.9, tokens=CALIBRATION_TOKENS // 2)
    assert index.calibrate(5_000, 60_000) is None  # half a window
    assert index.calibrate(0, 100) is None  # counters went down: a restarted engine starts a new window
    _window(index, believed_share=0.9)
    assert index.calibrate(0, 40_100) == 500
    assert index.capacity == 500


def test_never_below_the_minimum() -> None:
    index = PrefixIndex(capacity=100)
    index.remember(tuple(range(100)))
    index.calibrate(0, 0)
    for step in range(1, 6):
        _window(index, believed_share=0.9)
        index.calibrate(0, step * 50_000)
    assert index.capacity == MIN_CAPACITY
