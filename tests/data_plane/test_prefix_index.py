"""Prompt blocks and the per-deployment prefix index: chained hashes match only with everything before them,
whole blocks only, bounded memory with the least recently used out, and the candidates' cached tokens."""

from __future__ import annotations

import pytest

from data_plane.deployments.prefix_index import PrefixIndex, block_tokens, prompt_blocks


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
