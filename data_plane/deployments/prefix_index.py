"""Which prompt prefixes a deployment likely holds in its prefix cache, approximately and in bounded memory.
Pure: no clock, no I/O.

A prompt's text is cut into blocks of a fixed number of characters; each block's hash chains the one before, so
a block matches only with everything that precedes it, as an engine's prefix cache (vLLM's automatic prefix
caching) matches KV blocks. Each deployment remembers the hashes of the blocks this router sent it, least
recently used dropped first: the leading blocks of a new prompt found there were likely cached by the engine.

The router cannot see how much the engine's cache holds; an index that remembers more than the engine keeps
believes in prefixes long evicted, and spreads each prefix over more deployments than needed. So each index
sizes itself from evidence: over windows of traffic it compares the share of prompt tokens it believed cached
with the hit rate the engine reports (vLLM's prefix-cache counters), shrinks when the engine hit clearly less,
and grows back, up to its configured size, while the engine keeps up and the index is full.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from itertools import islice

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
    chained = 0  # each block's hash, the next one's seed: a comprehension is the cheapest loop on the request path
    return tuple([chained := hash((chained, text[start:start + block_chars]))
                  for start in range(0, len(text) - block_chars + 1, block_chars)])


def block_tokens(block_chars: int) -> int:
    return max(1, block_chars // CHARS_PER_TOKEN)


# A window of evidence: this many prompt tokens sent (about a hundred typical prompts) before a verdict.
CALIBRATION_TOKENS = 32_000
# The engine hit less than this share of what the index believed: the index remembers evicted prefixes.
SHRINK_BELOW = 0.8
# The engine hit at least this share: the index may be too small to remember what the engine holds.
GROW_ABOVE = 0.95
GROWTH = 1.25
MIN_CAPACITY = 64


class PrefixIndex:
    """The block hashes recently sent to one deployment, bounded to `capacity` (least recently used out), which
    `calibrate` moves between MIN_CAPACITY and the configured `max_capacity`."""

    __slots__ = ("_capacity", "_max_capacity", "_blocks", "_believed", "_sent", "_engine_since")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = self._max_capacity = capacity
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self._believed = self._sent = 0  # prompt tokens believed cached, and sent, in the current window
        self._engine_since: tuple[float, float] | None = None  # engine's (hits, queries) when the window began

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def capacity(self) -> int:
        return self._capacity

    def sent(self, prompt_tokens: int, believed_cached_tokens: int) -> None:
        """A prompt of `prompt_tokens` went to the deployment, `believed_cached_tokens` of it thought cached."""
        self._sent += max(0, prompt_tokens)
        self._believed += max(0, believed_cached_tokens)

    def calibrate(self, engine_hits_total: float, engine_queries_total: float) -> int | None:
        """The engine's prefix-cache counters (tokens) as its page has them now; at the end of a window of
        evidence, the index is resized and its new capacity returned (None otherwise)."""
        since = self._engine_since
        if since is None or engine_queries_total < since[1] or engine_hits_total < since[0]:
            self._restart(engine_hits_total, engine_queries_total)  # the first reading, or a restarted engine
            return None
        queries = engine_queries_total - since[1]
        if self._sent < CALIBRATION_TOKENS or queries <= 0:
            return None
        believed_rate = self._believed / self._sent
        engine_rate = (engine_hits_total - since[0]) / queries
        self._restart(engine_hits_total, engine_queries_total)
        capacity = self._capacity
        if believed_rate > 0 and engine_rate < SHRINK_BELOW * believed_rate:
            # From what it holds, not its bound: an index not yet full would otherwise shrink without forgetting.
            held = min(capacity, len(self._blocks))
            capacity = max(MIN_CAPACITY, int(held * max(0.5, engine_rate / believed_rate)))
        elif engine_rate >= GROW_ABOVE * believed_rate and len(self._blocks) >= capacity:
            capacity = min(self._max_capacity, int(capacity * GROWTH) + 1)
        if capacity == self._capacity:
            return None
        self._capacity = capacity
        self._evict()
        return capacity

    def _restart(self, hits: float, queries: float) -> None:
        self._engine_since = (hits, queries)
        self._believed = self._sent = 0

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
        self._evict()

    def _evict(self) -> None:
        held = self._blocks
        excess = len(held) - self._capacity
        if excess > 0:
            for block in list(islice(held, excess)):  # the least recently used first
                del held[block]
