"""Automatic prefix caching as vLLM does it, over text instead of token ids: a prompt is cut into fixed blocks
whose hashes chain (a block matches only together with everything before it), and an LRU of block hashes
says how many leading blocks a new prompt finds already computed. No clock, no I/O."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from simulator.tokens import CHARS_PER_TOKEN

BLOCK_CHARS = 256
# 64 tokens at the project's 4 characters a token: a few of vLLM's 16-token blocks, fine enough to be useful.
BLOCK_TOKENS = BLOCK_CHARS // CHARS_PER_TOKEN
_DIGEST_BYTES = 16


def block_hashes(text: str) -> tuple[bytes, ...]:
    """The chained hashes of `text`'s full blocks; a trailing partial block is not cached (vLLM caches only
    full blocks), so a text shorter than one block has none."""
    hashes: list[bytes] = []
    previous = b""
    for start in range(0, len(text) - BLOCK_CHARS + 1, BLOCK_CHARS):
        previous = hashlib.blake2b(previous + text[start:start + BLOCK_CHARS].encode(),
                                   digest_size=_DIGEST_BYTES).digest()
        hashes.append(previous)
    return tuple(hashes)


def cached_tokens(matched_blocks: int, prompt_tokens: int) -> int:
    """The prompt tokens a hit spares: the matched blocks' tokens, capped below the prompt's length because
    the last token is always computed again to produce the first output, as in vLLM."""
    return max(0, min(matched_blocks * BLOCK_TOKENS, prompt_tokens - 1))


class PrefixCache:
    """An LRU of block hashes holding at most `capacity_blocks` (0: disabled, nothing is kept or found)."""

    __slots__ = ("_blocks", "_capacity")

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must be 0 or more, got {capacity_blocks}")
        self._capacity = capacity_blocks
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    @property
    def capacity_blocks(self) -> int:
        return self._capacity

    @property
    def enabled(self) -> bool:
        return self._capacity > 0

    def __len__(self) -> int:
        return len(self._blocks)

    def match_and_insert(self, hashes: Sequence[bytes]) -> int:
        """How many leading blocks of `hashes` are cached; then every block is inserted or refreshed. The
        refresh runs from the last block to the first, so that an eviction takes a prompt's tail before its
        head (vLLM frees a request's blocks in reverse order for the same reason)."""
        if not self._capacity:
            return 0
        blocks = self._blocks
        matched = 0
        for block in hashes:
            if block not in blocks:
                break
            matched += 1
        for block in reversed(hashes):
            blocks[block] = None
            blocks.move_to_end(block)
        self._evict()
        return matched

    def resize(self, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must be 0 or more, got {capacity_blocks}")
        self._capacity = capacity_blocks
        self._evict()

    def _evict(self) -> None:
        blocks = self._blocks
        while len(blocks) > self._capacity:
            blocks.popitem(last=False)
