"""`reset_peer`: on the first data (or the source closing), waits `timeout` ms then resets both sides
(SO_LINGER 0 and close, so the peers get a TCP RST instead of a FIN)."""

from __future__ import annotations

import dataclasses

from regions.toxiproxy.toxics.toxic import Chunk, Emit, StreamClosed, Toxic, ToxicStub, register


@register
@dataclasses.dataclass(frozen=True, slots=True)
class ResetPeerToxic(Toxic):
    type_name = "reset_peer"

    timeout: int = 0

    async def pipe(self, chunk: Chunk, stub: ToxicStub, emit: Emit) -> None:
        # The chunk is dropped: a reset discards whatever was not yet delivered.
        await stub.sleep_uninterrupted(self.timeout / 1000)
        raise StreamClosed(reset=True)

    async def on_eof(self, stub: ToxicStub) -> None:
        await stub.sleep_uninterrupted(self.timeout / 1000)
        raise StreamClosed(reset=True)
