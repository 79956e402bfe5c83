"""`limit_data`: closes the connection once `bytes` bytes have gone through this direction."""

from __future__ import annotations

import dataclasses

from regions.toxiproxy.toxics.toxic import Chunk, Emit, StreamClosed, Toxic, ToxicStub, register


@register
@dataclasses.dataclass(frozen=True, slots=True)
class LimitDataToxic(Toxic):
    type_name = "limit_data"

    bytes: int = 0

    def new_state(self) -> LimitDataState:
        return LimitDataState()

    async def pipe(self, chunk: Chunk, stub: ToxicStub, emit: Emit) -> None:
        state: LimitDataState = stub.state
        remaining = max(0, self.bytes - state.transmitted)
        data = chunk.data[:remaining]
        if data:
            await emit(dataclasses.replace(chunk, data=data))
            state.transmitted += len(data)
        if self.bytes - state.transmitted <= 0:
            raise StreamClosed()


@dataclasses.dataclass(slots=True)
class LimitDataState:
    # Per connection, kept across updates of the toxic, as Toxiproxy keeps its stub state.
    transmitted: int = 0
