"""The prefix cache: chained block hashes, leading-block matches, LRU bounds and the tokens a hit spares."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.prefix_cache import BLOCK_CHARS, BLOCK_TOKENS, PrefixCache, block_hashes, cached_tokens


def _text(*blocks: str) -> str:
    return "".join(b * BLOCK_CHARS for b in blocks)


@pytest.mark.parametrize(("length", "blocks"), [(0, 0), (BLOCK_CHARS - 1, 0), (BLOCK_CHARS, 1),
                                                (3 * BLOCK_CHARS + 10, 3)])
def test_only_full_blocks_are_hashed(length: int, blocks: int) -> None:
    assert len(block_hashes("x" * length)) == blocks


def test_a_block_matches_only_with_everything_before_it() -> None:
    abc, xbc = block_hashes(_text("a", "b", "c")), block_hashes(_text("x", "b", "c"))
    assert abc[0] != xbc[0] and abc[1] != xbc[1] and abc[2] != xbc[2]  # same blocks, other prefix
    assert block_hashes(_text("a", "b", "z"))[:2] == abc[:2]


@pytest.mark.parametrize(
    ("first", "second", "matched"),
    [
        (("a", "b", "c"), ("a", "b", "c"), 3),
        (("a", "b", "c"), ("a", "b", "d"), 2),
        (("a", "b", "c"), ("x", "b", "c"), 0),
        (("a",), ("a", "b", "c"), 1),
        ((), ("a",), 0),
    ],
)
def test_a_prompt_finds_the_leading_blocks_seen_before(first: tuple[str, ...], second: tuple[str, ...],
                                                       matched: int) -> None:
    cache = PrefixCache(100)
    assert cache.match_and_insert(block_hashes(_text(*first))) == 0
    assert cache.match_and_insert(block_hashes(_text(*second))) == matched


def test_the_lru_evicts_the_least_recent_and_a_prompts_tail_first() -> None:
    cache = PrefixCache(3)
    cache.match_and_insert(block_hashes(_text("a", "b", "c")))
    cache.match_and_insert(block_hashes(_text("x")))  # evicts the tail of a-b-c, not its head
    assert len(cache) == 3
    assert cache.match_and_insert(block_hashes(_text("a", "b", "c"))) == 2
    cache.match_and_insert(block_hashes(_text("p", "q", "r")))
    assert cache.match_and_insert(block_hashes(_text("a"))) == 0


def test_zero_blocks_disable_the_cache_and_resizing_evicts() -> None:
    cache = PrefixCache(0)
    hashes = block_hashes(_text("a", "b"))
    assert not cache.enabled and cache.match_and_insert(hashes) == 0 and cache.match_and_insert(hashes) == 0
    cache.resize(10)
    cache.match_and_insert(hashes)
    assert cache.match_and_insert(hashes) == 2
    cache.resize(1)
    assert len(cache) == 1
    cache.resize(0)
    assert len(cache) == 0
    with pytest.raises(ValueError, match="capacity_blocks"):
        PrefixCache(-1)


@pytest.mark.parametrize(("matched", "prompt", "spared"),
                         [(0, 100, 0), (1, 100, BLOCK_TOKENS), (2, 128, 127), (2, 1, 0), (5, 10_000, 5 * 64)])
def test_cached_tokens_stay_below_the_prompt(matched: int, prompt: int, spared: int) -> None:
    assert cached_tokens(matched, prompt) == spared


@given(st.lists(st.text(alphabet="ab", min_size=0, max_size=4 * BLOCK_CHARS), max_size=20),
       st.integers(0, 8))
def test_the_cache_never_holds_more_than_its_capacity(prompts: list[str], capacity: int) -> None:
    cache = PrefixCache(capacity)
    for prompt in prompts:
        hashes = block_hashes(prompt)
        assert 0 <= cache.match_and_insert(hashes) <= len(hashes)
        assert len(cache) <= capacity
