"""Which prompt prefixes a deployment likely holds in its prefix cache, approximately and in bounded memory.
Pure: no clock, no I/O.

A prompt's text is cut into blocks of a fixed number of characters; each block's hash chains the one before, so
a block matches only with everything that precedes it, as an engine's prefix cache (vLLM's automatic prefix
caching) matches KV blocks. Each deployment remembers the hashes of the blocks this router sent it, least
recently used dropped first: the leading blocks of a new prompt found there were likely cached by the engine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from meridian_common.workload import CHARS_PER_TOKEN


def prompt_blocks(parts: Iterable[str], block_chars: int, max_blocks: int) -> tuple[int, ...]:
    """The chained hashes of the leading whole blocks of the text `parts` make when joined, at most
    `max_blocks` of them: a partial last block is not hashed (an engine caches whole blocks only)."""
    wanted = block_chars * max_blocks
    leading: list[str] = []
    length = 0
    for part in parts:  # only the leading characters are copied, however long the prompt
        leading.append(part[:wanted - length])
        length += len(leading[-1])
        if length >= wanted:
            break
    text = "".join(leading)
    hashes: list[int] = []
    chained = 0
    for start in range(0, len(text) - block_chars + 1, block_chars):
        chained = hash((chained, text[start:start + block_chars]))
        hashes.append(chained)
    return tuple(hashes)


def block_tokens(block_chars: int) -> int:
    return max(1, block_chars // CHARS_PER_TOKEN)


class PrefixIndex:
    """The block hashes recently sent to one deployment, bounded to `capacity` (least recently used out)."""

    __slots__ = ("_capacity", "_blocks")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def matched(self, blocks: tuple[int, ...]) -> int:
        """How many of `blocks`, from the first, are held (stopping at the first that is not)."""
        held = self._blocks
        for count, block in enumerate(blocks):
            if block not in held:
                return count
        return len(blocks)

    def remember(self, blocks: tuple[int, ...]) -> None:
        held = self._blocks
        for block in blocks:
            if block in held:
                held.move_to_end(block)
            else:
                held[block] = None
        while len(held) > self._capacity:
            held.popitem(last=False)
