"""`bandwidth`: limits a direction to `rate` KB/s (1 KB = 1000 bytes), in slices of at most 100 ms of data."""

from __future__ import annotations

import dataclasses
import math

from regions.toxiproxy.toxics.toxic import Chunk, Emit, Toxic, ToxicStub, register

SLICE_S = 0.1


@register
@dataclasses.dataclass(frozen=True, slots=True)
class BandwidthToxic(Toxic):
    type_name = "bandwidth"

    rate: int = 0

    def new_state(self) -> BandwidthState:
        return BandwidthState()

    async def pipe(self, chunk: Chunk, stub: ToxicStub, emit: Emit) -> None:
        state: BandwidthState = stub.state
        if self.rate <= 0:
            # Toxiproxy lets nothing through at rate 0 until the toxic goes away.
            await stub.sleep(math.inf)
            await emit(chunk)
            return
        bytes_per_s = self.rate * 1000
        state.owed_s += len(chunk.data) / bytes_per_s
        slice_bytes = int(bytes_per_s * SLICE_S)
        data = chunk.data
        while len(data) > slice_bytes:
            if not await stub.sleep(SLICE_S):
                await emit(dataclasses.replace(chunk, data=data))
                return
            await emit(dataclasses.replace(chunk, data=data[:slice_bytes]))
            data = data[slice_bytes:]
            state.owed_s -= SLICE_S
        started = stub.now()
        completed = await stub.sleep(state.owed_s)
        state.owed_s = max(0.0, state.owed_s - (stub.now() - started)) if completed else 0.0
        await emit(dataclasses.replace(chunk, data=data))


@dataclasses.dataclass(slots=True)
class BandwidthState:
    # Seconds of sending still owed; carried across chunks so that small writes add up.
    owed_s: float = 0.0
