"""`slicer`: cuts each chunk into pieces of about `average_size` ± `size_variation` bytes, `delay` µs apart."""

from __future__ import annotations

import dataclasses
import random

from regions.toxiproxy.toxics.toxic import Chunk, Emit, Toxic, ToxicStub, register


def slice_bounds(length: int, average_size: int, size_variation: int, rng: random.Random) -> list[int]:
    """Cut points 0 = b0 < b1 < ... < bn = length, halving as Toxiproxy's recursive `chunk` does.

    Iterative and clamped: Toxiproxy recurses forever on average_size 0 and can cut outside the chunk
    when size_variation >= average_size; here every piece has at least one byte.
    """
    if length <= 0:
        return [0, 0]
    cuts = [0]
    pending = [(0, length)]
    while pending:
        start, end = pending.pop()
        if (end - start) - average_size <= size_variation or end - start <= 1:
            cuts.append(end)
            continue
        mid = start + (end - start) // 2
        if size_variation > 0:
            mid += rng.randrange(2 * size_variation) - size_variation
        mid = min(max(mid, start + 1), end - 1)
        # Right half pushed first so that the left half is cut (and emitted) first.
        pending.append((mid, end))
        pending.append((start, mid))
    return cuts


@register
@dataclasses.dataclass(frozen=True, slots=True)
class SlicerToxic(Toxic):
    type_name = "slicer"

    average_size: int = 0
    size_variation: int = 0
    delay: int = 0

    async def pipe(self, chunk: Chunk, stub: ToxicStub, emit: Emit) -> None:
        cuts = slice_bounds(len(chunk.data), self.average_size, self.size_variation, stub.rng)
        for index in range(1, len(cuts)):
            await emit(dataclasses.replace(chunk, data=chunk.data[cuts[index - 1]:cuts[index]]))
            if not await stub.sleep(self.delay / 1_000_000):
                if cuts[index] < len(chunk.data):
                    await emit(dataclasses.replace(chunk, data=chunk.data[cuts[index]:]))
                return
